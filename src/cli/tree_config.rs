//! The chom.yaml pre-pass: after clap has parsed the command line, every argument left at
//! its built-in default (given neither as a flag nor through its `CHOM_*` variable) is
//! filled from the `chom.yaml` found by walking up from the working directory. Doing it
//! once here keeps the subcommands unaware of chom.yaml. It must not read the file itself
//! (`validate::load_config` does) nor change an argument the user set.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::ArgMatches;
use clap::parser::ValueSource;

use super::secrets::{SecretsArgs, SecretsCommand};
use super::{Cli, Command, ConnectArgs, IdentityArgs, InventoryArgs, SshArgs, TreeArgs};
use crate::treeconfig::{self, Located, TreeConfig};

/// Fills `cli` from the chom.yaml above the working directory, if there is one. A config
/// with errors stops every command but `chom validate`, which reports them.
pub fn apply(cli: &mut Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    // These make a tree or bring their own; a chom.yaml around them is not theirs.
    if matches!(
        cli.command,
        Command::Init(_)
            | Command::Schema(_)
            | Command::Demo(_)
            | Command::ImportLegacy(_)
            | Command::Completion(_)
            | Command::Man(_)
    ) {
        return Ok(());
    }
    let Some((_, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let Some(found) = treeconfig::discover(&cwd) else {
        return Ok(());
    };
    let base = treeconfig::base(&found, &cwd);
    // Shown as `chom.yaml` from the tree root, as inventory files are shown relative.
    let file = base.join(treeconfig::FILE_NAME);
    let (config, findings) = crate::validate::load_config(&file);
    let Some(config) = config else {
        if let Command::Validate(args) = &mut cli.command {
            // The findings are reported with the rest of the tree; the inventory is
            // still looked for beside the file, as it would be with a valid one.
            if unset(sub, "inventory") {
                args.tree.inventory = base.join("inventory.d");
            }
            args.tree.config = Some(Located { file, state_dir: None });
            return Ok(());
        }
        let text = crate::diag::render(&findings, crate::diag::Format::Human, &crate::diag::source);
        eprint!("{text}");
        anyhow::bail!("{} has errors (run `chom validate`)", file.display());
    };
    fill(cli, sub, &config, &base, file, &|k| std::env::var_os(k))
}

/// Fills the arguments of the parsed subcommand (`sub` holds its matches) from `config`,
/// whose relative paths are taken from `base`. `env` answers for the one variable clap
/// does not read itself (`CHOM_AGE_IDENTITY` for `--age-identity`).
fn fill(
    cli: &mut Cli,
    sub: &ArgMatches,
    config: &TreeConfig,
    base: &Path,
    file: PathBuf,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> anyhow::Result<()> {
    let located = Located {
        file,
        state_dir: config.state_dir.as_deref().map(|d| treeconfig::resolve(base, d)),
    };
    let tree = |tree: &mut TreeArgs| fill_tree(tree, sub, config, base, located.clone(), env);
    let inventory = |tree: &mut InventoryArgs| fill_inventory(tree, sub, config, base, located.clone(), env);
    let ssh = |ssh: &mut SshArgs| fill_ssh(ssh, sub, config);
    let connect = |c: &mut ConnectArgs| fill_connect(c, sub, config, base);
    let identity = |i: &mut IdentityArgs| fill_identity(i, sub, config, base, env);
    match &mut cli.command {
        // `chom validate` checks the working tree (a clone, a pre-commit hook), never the
        // live checkout a git source keeps in the state directory.
        Command::Validate(a) => fill_tree(
            &mut a.tree,
            sub,
            &TreeConfig {
                source: None,
                ..config.clone()
            },
            base,
            located.clone(),
            env,
        ),
        Command::Get(a) => inventory(&mut a.tree),
        Command::History(a) => inventory(&mut a.tree),
        Command::Resume(a) => inventory(&mut a.tree),
        Command::Detect(a) => {
            inventory(&mut a.tree);
            connect(&mut a.ssh.connect);
            ssh(&mut a.ssh);
        }
        Command::Trust(a) => {
            inventory(&mut a.tree);
            connect(&mut a.ssh);
        }
        Command::Reconcile(a) => {
            tree(&mut a.tree);
            connect(&mut a.ssh.connect);
            ssh(&mut a.ssh);
            identity(&mut a.identity);
        }
        Command::Plan(a) => {
            tree(&mut a.tree);
            connect(&mut a.ssh.connect);
            ssh(&mut a.ssh);
            identity(&mut a.identity);
        }
        Command::Rollback(a) => {
            tree(&mut a.tree);
            connect(&mut a.ssh.connect);
            ssh(&mut a.ssh);
            identity(&mut a.identity);
        }
        Command::Daemon(a) => {
            tree(&mut a.tree);
            connect(&mut a.ssh.connect);
            ssh(&mut a.ssh);
            identity(&mut a.identity);
            fill_daemon(a, sub, config)?;
            if let Some(spec) = &config.source {
                a.source_spec = Some(Box::new((spec.clone(), base.to_path_buf())));
            }
        }
        Command::Secrets(a) => fill_secrets(a, sub, config, base),
        Command::Init(_)
        | Command::Schema(_)
        | Command::Demo(_)
        | Command::ImportLegacy(_)
        | Command::Completion(_)
        | Command::Man(_) => {}
    }
    Ok(())
}

/// True when the argument `id` was given neither on the command line nor by environment.
fn unset(matches: &ArgMatches, id: &str) -> bool {
    matches!(matches.value_source(id), None | Some(ValueSource::DefaultValue))
}

/// Sets `target` to `value` when the config has one and the user gave none.
fn set<T>(matches: &ArgMatches, id: &str, target: &mut T, value: Option<T>) {
    if let Some(value) = value
        && unset(matches, id)
    {
        *target = value;
    }
}

fn fill_tree(
    tree: &mut TreeArgs,
    m: &ArgMatches,
    config: &TreeConfig,
    base: &Path,
    mut located: Located,
    env: &dyn Fn(&str) -> Option<OsString>,
) {
    if let Some(source) = &config.source {
        // GitOps: the tree is the live checkout in the state directory, its statuses in
        // the state directory's status folder.
        let state = treeconfig::state_dir(None, located.state_dir.as_deref(), env, || base.join(".chom"));
        let path = source.path.clone().unwrap_or_default();
        let layout = crate::source::layout(&state, &path);
        set(m, "inventory", &mut tree.inventory, Some(layout.inventory));
        tree.status_dir = layout.status;
        located.state_dir = Some(state);
        tree.config = Some(located);
        return;
    }
    // The inventory is always taken from the config's folder, named or not: that is what
    // lets a command run from anywhere inside the tree.
    set(m, "inventory", &mut tree.inventory, Some(config.inventory_dir(base)));
    let resolve = |dir: &Option<PathBuf>| dir.as_deref().map(|d| Some(treeconfig::resolve(base, d)));
    set(m, "scripts", &mut tree.scripts, resolve(&config.scripts));
    set(m, "secrets", &mut tree.secrets, resolve(&config.secrets));
    tree.config = Some(located);
}

/// The inventory of the commands without `--scripts` and `--secrets`: chom.yaml's
/// settings apply to them as they are, since no flag can differ.
fn fill_inventory(
    tree: &mut InventoryArgs,
    m: &ArgMatches,
    config: &TreeConfig,
    base: &Path,
    located: Located,
    env: &dyn Fn(&str) -> Option<OsString>,
) {
    if config.source.is_some() {
        // GitOps: the live checkout and the state directory's status folder, as for
        // the commands that take a whole tree.
        let mut whole = tree.tree();
        fill_tree(&mut whole, m, config, base, located, env);
        tree.inventory = whole.inventory;
        tree.scripts = whole.scripts;
        tree.secrets = whole.secrets;
        tree.status_dir = whole.status_dir;
        tree.config = whole.config;
        return;
    }
    set(m, "inventory", &mut tree.inventory, Some(config.inventory_dir(base)));
    tree.scripts = config.scripts.as_deref().map(|d| treeconfig::resolve(base, d));
    tree.secrets = config.secrets.as_deref().map(|d| treeconfig::resolve(base, d));
    tree.config = Some(located);
}

fn fill_connect(ssh: &mut ConnectArgs, m: &ArgMatches, config: &TreeConfig, base: &Path) {
    let known_hosts: Vec<PathBuf> = config
        .known_hosts
        .iter()
        .map(|f| treeconfig::resolve(base, f))
        .collect();
    set(
        m,
        "known_hosts",
        &mut ssh.known_hosts,
        Some(known_hosts).filter(|k| !k.is_empty()),
    );
    // Rounded up: a timeout written as 500ms must not become zero.
    let whole_seconds = |d: std::time::Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
    set(
        m,
        "connect_timeout",
        &mut ssh.connect_timeout,
        config.ssh.connect_timeout.map(|d| whole_seconds(d.0)),
    );
}

fn fill_ssh(ssh: &mut SshArgs, m: &ArgMatches, config: &TreeConfig) {
    let s = &config.ssh;
    set(m, "max_handshakes", &mut ssh.max_handshakes, s.max_handshakes);
    set(m, "handshake_rate", &mut ssh.handshake_rate, s.handshake_rate);
    set(
        m,
        "ssh_idle_timeout",
        &mut ssh.ssh_idle_timeout,
        s.idle_timeout.map(|d| d.0),
    );
    set(m, "ssh_max_idle", &mut ssh.ssh_max_idle, s.max_idle);
}

fn fill_identity(
    ssh: &mut IdentityArgs,
    m: &ArgMatches,
    config: &TreeConfig,
    base: &Path,
    env: &dyn Fn(&str) -> Option<OsString>,
) {
    // `--age-identity` has no clap `env`; `$CHOM_AGE_IDENTITY` is read later by
    // `secrets::locate_identity`, and must still win over the config.
    if env(crate::secrets::IDENTITY_ENV).is_none() {
        let identity = config
            .age_identity
            .as_deref()
            .map(|f| Some(treeconfig::resolve(base, f)));
        set(m, "age_identity", &mut ssh.age_identity, identity);
    }
}

fn fill_daemon(args: &mut super::daemon::DaemonArgs, m: &ArgMatches, config: &TreeConfig) -> anyhow::Result<()> {
    let d = &config.daemon;
    let shard = d
        .shard
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| anyhow::anyhow!("chom.yaml daemon.shard: {e}"))?;
    set(m, "shard", &mut args.shard, shard);
    set(m, "metrics_addr", &mut args.metrics_addr, d.metrics_addr.clone());
    let t = &mut args.tuning;
    set(m, "workers", &mut t.workers, d.workers);
    set(m, "rate", &mut t.rate, d.rate);
    set(m, "burst", &mut t.burst, d.burst);
    set(m, "backoff_base", &mut t.backoff_base, d.backoff_base.map(|v| v.0));
    set(m, "backoff_max", &mut t.backoff_max, d.backoff_max.map(|v| v.0));
    set(
        m,
        "relist_interval",
        &mut t.relist_interval,
        d.relist_interval.map(|v| v.0),
    );
    set(m, "debounce", &mut t.debounce, d.debounce.map(|v| v.0));
    set(
        m,
        "shutdown_timeout",
        &mut t.shutdown_timeout,
        d.shutdown_timeout.map(|v| v.0),
    );
    Ok(())
}

fn fill_secrets(args: &mut SecretsArgs, m: &ArgMatches, config: &TreeConfig, base: &Path) {
    let mut layout = crate::inventory::Layout::beside(&config.inventory_dir(base));
    if let Some(dir) = &config.secrets {
        layout.secrets = treeconfig::resolve(base, dir);
    }
    set(m, "dir", &mut args.dir, Some(layout.secrets));
    let Some((_, inner)) = m.subcommand() else {
        return;
    };
    let identity = match &mut args.command {
        SecretsCommand::Check(c) => &mut c.identity,
        SecretsCommand::Rotate(r) => &mut r.identity,
        SecretsCommand::Set(_) | SecretsCommand::List(_) | SecretsCommand::Keygen(_) => return,
    };
    let path = config
        .age_identity
        .as_deref()
        .map(|f| Some(treeconfig::resolve(base, f)));
    set(inner, "age_identity", &mut identity.age_identity, path);
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;

    const CONFIG: &str = r#"{"apiVersion":"chom.dev/v1","kind":"Config","stateDir":"state",
        "knownHosts":["known_hosts","/etc/chom/known_hosts"],"ageIdentity":"key.txt",
        "ssh":{"connectTimeout":"1500ms","maxIdle":3},
        "daemon":{"workers":7,"shard":"1/2","metricsAddr":"off","debounce":"1s"}}"#;

    /// Parses `args` (clap reads no `CHOM_*` variable the tests set) and fills it from
    /// [`CONFIG`] found in `/tree`.
    fn filled(args: &[&str], env: &[(&str, &str)]) -> Cli {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        let config: TreeConfig = serde_json::from_str(CONFIG).unwrap();
        let (_, sub) = matches.subcommand().unwrap();
        let env = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v));
        fill(
            &mut cli,
            sub,
            &config,
            Path::new("/tree"),
            "/tree/chom.yaml".into(),
            &env,
        )
        .unwrap();
        cli
    }

    #[test]
    fn unset_arguments_are_filled_from_the_config_relative_to_its_folder() {
        let Command::Daemon(d) = filled(&["chom", "daemon"], &[]).command else {
            panic!("daemon expected")
        };
        assert_eq!(d.tree.inventory, Path::new("/tree/inventory.d"));
        assert_eq!(d.tree.scripts, None, "scripts stay beside the inventory");
        let located = d.tree.config.unwrap();
        assert_eq!(located.state_dir.as_deref(), Some(Path::new("/tree/state")));
        assert_eq!(
            d.ssh.connect.known_hosts,
            [
                PathBuf::from("/tree/known_hosts"),
                PathBuf::from("/etc/chom/known_hosts")
            ]
        );
        assert_eq!(d.identity.age_identity.as_deref(), Some(Path::new("/tree/key.txt")));
        assert_eq!(
            (d.ssh.connect.connect_timeout, d.ssh.ssh_max_idle, d.ssh.max_handshakes),
            (2, 3, 10)
        );
        assert_eq!(
            (d.tuning.workers, d.shard.to_string(), d.metrics_addr.as_str()),
            (7, "1/2".into(), "off")
        );
        assert_eq!(d.tuning.debounce, std::time::Duration::from_secs(1));
    }

    #[test]
    fn flags_win_over_the_config() {
        let args = [
            "chom",
            "daemon",
            "--inventory",
            "elsewhere",
            "--known-hosts",
            "mine",
            "--age-identity",
            "k",
            "--workers",
            "2",
            "--connect-timeout",
            "9",
            "--shard",
            "0/1",
        ];
        let Command::Daemon(d) = filled(&args, &[]).command else {
            panic!("daemon expected")
        };
        assert_eq!(d.tree.inventory, Path::new("elsewhere"));
        assert_eq!(d.ssh.connect.known_hosts, [PathBuf::from("mine")]);
        assert_eq!(d.identity.age_identity.as_deref(), Some(Path::new("k")));
        assert_eq!(
            (d.tuning.workers, d.ssh.connect.connect_timeout, d.shard.count),
            (2, 9, 1)
        );
        assert_eq!(
            d.ssh.ssh_max_idle, 3,
            "the settings not given still come from the config"
        );
    }

    #[test]
    fn the_identity_variable_wins_over_the_config() {
        let Command::Reconcile(r) = filled(&["chom", "reconcile"], &[("CHOM_AGE_IDENTITY", "/env/key")]).command else {
            panic!("reconcile expected")
        };
        assert_eq!(
            r.identity.age_identity, None,
            "left for locate_identity to read the variable"
        );
    }

    #[test]
    fn secrets_commands_take_the_folder_and_identity_from_the_config() {
        let Command::Secrets(s) = filled(&["chom", "secrets", "check"], &[]).command else {
            panic!("secrets expected")
        };
        assert_eq!(s.dir, Path::new("/tree/secrets.d"));
        let SecretsCommand::Check(c) = s.command else {
            panic!("check expected")
        };
        assert_eq!(c.identity.age_identity.as_deref(), Some(Path::new("/tree/key.txt")));
    }

    #[test]
    fn every_subcommand_can_be_filled() {
        // value_source panics on an id the subcommand lacks; this walks every mapping.
        for args in [
            &["chom", "validate"][..],
            &["chom", "get"],
            &["chom", "history"],
            &["chom", "resume", "w"],
            &["chom", "detect"],
            &["chom", "trust", "w"],
            &["chom", "reconcile"],
            &["chom", "daemon"],
            &["chom", "plan"],
            &["chom", "rollback", "w"],
            &["chom", "secrets", "set", "X"],
            &["chom", "secrets", "rotate"],
        ] {
            filled(args, &[]);
        }
    }
}
