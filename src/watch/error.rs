//! The watcher's errors and the friendly wording for OS limits; it must not decide what to do
//! about an error (the caller and the event loop do).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `EMFILE` on Linux: too many inotify instances for this user, or too many open files for this
/// process. Spelled out because the crate has no `libc` dependency and std has no `ErrorKind`
/// for it.
const EMFILE: i32 = 24;
/// `ENOSPC` on Linux, which `inotify_add_watch` returns when `max_user_watches` is exhausted.
const ENOSPC: i32 = 28;

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The inventory folder is the one root that must exist: without it there is nothing to run.
    #[error(
        "inventory folder {} does not exist or is not a folder; create it or point chom at the checkout that holds it",
        path.display()
    )]
    InventoryMissing {
        /// The configured inventory path.
        path: PathBuf,
    },
    /// The per-user inotify watch limit is used up (one watch per watched folder).
    #[error(
        "inotify watch limit reached while watching {}; raise fs.inotify.max_user_watches \
         (for example `sysctl -w fs.inotify.max_user_watches=524288`, and persist it in /etc/sysctl.d/)",
        path.display()
    )]
    WatchLimit {
        /// The folder whose watch could not be added.
        path: PathBuf,
    },
    /// No inotify instance could be created.
    #[error(
        "too many inotify instances or open files; raise fs.inotify.max_user_instances \
         (for example `sysctl -w fs.inotify.max_user_instances=1024`, and persist it in /etc/sysctl.d/) \
         or the open-file limit (`LimitNOFILE=` in the systemd unit)"
    )]
    InstanceLimit,
    /// Any other failure to watch a folder.
    #[error("watching {}", path.display())]
    Watch {
        /// The folder that could not be watched.
        path: PathBuf,
        /// What notify reported.
        #[source]
        source: notify::Error,
    },
    /// Any other failure to create the watcher itself.
    #[error("starting the file watcher")]
    Start {
        /// What notify reported.
        #[source]
        source: notify::Error,
    },
    /// A configured duration is too small to be meaningful (a zero debounce would send a change
    /// set for nearly every single file event).
    #[error("{setting} must be at least {minimum:?}, got {value:?}")]
    InvalidConfig {
        /// Which setting.
        setting: &'static str,
        /// The smallest accepted value.
        minimum: Duration,
        /// The value given.
        value: Duration,
    },
    /// `Watcher::start` spawns its event loop on the current tokio runtime.
    #[error("the file watcher must be started from inside a tokio runtime")]
    NoRuntime,
}

/// Which OS limit, if any, a notify error stands for.
enum Limit {
    Watches,
    Instances,
}

fn limit_of(error: &notify::Error) -> Option<Limit> {
    match &error.kind {
        notify::ErrorKind::MaxFilesWatch => Some(Limit::Watches),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(ENOSPC) => Some(Limit::Watches),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(EMFILE) => Some(Limit::Instances),
        _ => None,
    }
}

/// Maps a failure to add a watch on `path`.
pub(super) fn watch_error(path: &Path, source: notify::Error) -> WatchError {
    match limit_of(&source) {
        Some(Limit::Watches) => WatchError::WatchLimit {
            path: path.to_path_buf(),
        },
        Some(Limit::Instances) => WatchError::InstanceLimit,
        None => WatchError::Watch {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Maps a failure to create the inotify instance.
pub(super) fn start_error(source: notify::Error) -> WatchError {
    match limit_of(&source) {
        Some(Limit::Instances) => WatchError::InstanceLimit,
        _ => WatchError::Start { source },
    }
}

/// Words an error that notify reported while running, for a change set's `reason`: the caller
/// re-lists, and the reason is what ends up in its log.
pub(super) fn describe_runtime_error(error: &notify::Error) -> String {
    let paths: Vec<String> = error.paths.iter().map(|path| path.display().to_string()).collect();
    let at = if paths.is_empty() {
        String::new()
    } else {
        format!(" at {}", paths.join(", "))
    };
    match limit_of(error) {
        Some(Limit::Watches) => format!(
            "inotify watch limit reached{at}, so some folders are not watched; raise fs.inotify.max_user_watches"
        ),
        Some(Limit::Instances) => format!("too many inotify instances{at}; raise fs.inotify.max_user_instances"),
        None => format!("file watch error{at}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_limit_message_names_the_sysctl_to_raise() {
        let error = watch_error(
            Path::new("/repo/inventory.d"),
            notify::Error::new(notify::ErrorKind::MaxFilesWatch),
        );
        let message = error.to_string();
        assert!(message.contains("fs.inotify.max_user_watches"), "{message}");
        assert!(message.contains("sysctl"), "{message}");
        assert!(message.contains("/repo/inventory.d"), "{message}");
    }

    #[test]
    fn running_out_of_inotify_instances_names_max_user_instances() {
        let error = start_error(notify::Error::io(std::io::Error::from_raw_os_error(EMFILE)));
        assert!(matches!(error, WatchError::InstanceLimit));
        assert!(error.to_string().contains("fs.inotify.max_user_instances"));
    }

    #[test]
    fn a_watch_limit_hit_while_running_is_explained_in_the_reason() {
        let error = notify::Error::new(notify::ErrorKind::MaxFilesWatch).add_path("/repo/inventory.d/prod".into());
        let reason = describe_runtime_error(&error);
        assert!(
            reason.contains("max_user_watches") && reason.contains("/repo/inventory.d/prod"),
            "{reason}"
        );
    }
}
