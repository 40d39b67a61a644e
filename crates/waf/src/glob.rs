//! File name patterns for `rules_files`, as Apache's `Include` reads them: `*` and `?` in
//! any path component, matches sorted by name; hidden files match only a pattern that
//! starts with `.`.

use std::path::{Component, Path, PathBuf};

/// Whether `name` matches `pattern` (`*`: any run of characters, `?`: one character).
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// The files `pattern` names, sorted within each wildcard component. A pattern without
/// wildcards names its file, which must exist; one with wildcards must match something.
pub(crate) fn expand(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let mut current = vec![PathBuf::new()];
    let mut wild = false;
    for component in pattern.components() {
        let Component::Normal(part) = component else {
            for p in &mut current {
                p.push(component);
            }
            continue;
        };
        let part = part.to_str().ok_or("the pattern is not valid UTF-8")?;
        if !has_wildcard(part) {
            for p in &mut current {
                p.push(part);
            }
            continue;
        }
        wild = true;
        let mut next = Vec::new();
        for dir in &current {
            let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| matches(part, n) && (!n.starts_with('.') || part.starts_with('.')))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        current = next;
    }
    if !wild {
        return match std::fs::metadata(pattern) {
            Ok(m) if m.is_file() => Ok(current),
            Ok(_) => Err("not a file".into()),
            Err(e) => Err(format!("cannot read it: {e}")),
        };
    }
    current.retain(|p| p.is_file());
    if current.is_empty() {
        return Err("matches no file".into());
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*.conf", "a.conf"));
        assert!(matches("REQUEST-9??-*.conf", "REQUEST-942-X.conf"));
        assert!(!matches("*.conf", "a.data"));
        assert!(matches("*", ""));
        assert!(!matches("a*b", "ab_"));
        assert!(matches("a*b*c", "a_b_b_c"));
    }

    #[test]
    fn expands_sorted_and_reports_misses() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.conf", "a.conf", "c.data", ".hidden.conf"] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        let found = expand(&dir.path().join("*.conf")).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.conf", "b.conf"]);
        assert_eq!(
            expand(&dir.path().join("*.nope")).unwrap_err(),
            "matches no file"
        );
        assert!(
            expand(&dir.path().join("missing.conf"))
                .unwrap_err()
                .starts_with("cannot read it")
        );
        assert_eq!(expand(&dir.path().join("c.data")).unwrap().len(), 1);
    }
}
