//! Plain-text tables for people: left-aligned columns padded to the widest cell, the
//! way `kubectl get` prints them. Widths count characters, not bytes.

/// Renders a header and rows as aligned columns; the last column is never padded.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 < columns {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count() + 2));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up_on_the_widest_cell() {
        let text = super::render(
            &["NAME", "CPU", "STATUS"],
            &[
                vec!["web-1".into(), "2".into(), "OK".into()],
                vec!["a".into(), "16".into(), "FAIL x".into()],
            ],
        );
        assert_eq!(text, "NAME   CPU  STATUS\nweb-1  2    OK\na      16   FAIL x\n");
    }
}
