//! Tables the list commands print: every column as wide as its widest cell (header included),
//! two spaces between columns, the last column left as long as it is. Rows never shift, whatever
//! the length of an id.

/// A table: a header and rows of the same number of cells.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra ones are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let cell = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, width) in widths.iter_mut().enumerate() {
                *width = (*width).max(cell(row, i).chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let text = cell(row, i);
                line.push_str(&text);
                if i + 1 < columns {
                    line.push_str(&" ".repeat(width - text.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each column starts in `line`, by the header's column starts.
    fn cells_at(line: &str, starts: &[usize]) -> Vec<String> {
        let chars: Vec<char> = line.chars().collect();
        starts
            .iter()
            .enumerate()
            .map(|(n, &start)| {
                let end = starts.get(n + 1).copied().unwrap_or(chars.len());
                chars[start.min(chars.len())..end.min(chars.len())]
                    .iter()
                    .collect::<String>()
                    .trim()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_rows_never_shift() {
        let cases: &[(&[&str], &[&[&str]])] = &[
            (
                &["DEVICE", "STATE", "APPS"],
                &[&["d", "online", "a@1:running"]],
            ),
            (
                &["DEVICE", "STATE", "APPS"],
                &[
                    &[
                        "a-device-id-longer-than-the-old-fixed-24-columns",
                        "offline",
                        "-",
                    ],
                    &["x", "decommissioned", "counter@2:running,sensor@1:failed"],
                    &["ünïcode-ok", "online", ""],
                ],
            ),
            (&["APP"], &[&["only-one-column"]]),
        ];
        for (header, rows) in cases {
            let mut table = Table::new(header);
            for row in *rows {
                table.row(row.iter().map(|c| (*c).to_owned()).collect());
            }
            let text = table.render();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), rows.len() + 1, "{text}");
            let starts: Vec<usize> = header
                .iter()
                .map(|h| {
                    lines[0]
                        .find(h)
                        .map(|b| lines[0][..b].chars().count())
                        .unwrap()
                })
                .collect();
            for (line, row) in lines[1..].iter().zip(*rows) {
                assert_eq!(cells_at(line, &starts), row.to_vec(), "{text}");
            }
        }
    }
}
