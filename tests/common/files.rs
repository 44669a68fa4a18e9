//! Files of the repository and copies of them, for the tests that read the deliverables
//! (`k8s/`, the README's walkthrough, the Docker build context) rather than run veto.

use std::fs;
use std::path::{Path, PathBuf};

/// The repository's root (the crate's manifest dir).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The text of `path`; panics naming it when it cannot be read.
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Copies the file or directory `from` to `to`, recursively; anything that is neither (a
/// dangling link, a path that does not exist) is left out.
pub fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
        let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        for entry in entries {
            let entry = entry.expect("a directory entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else if from.is_file() {
        fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// `to` as a path relative to the directory `from` (both absolute).
pub fn relative(from: &Path, to: &Path) -> String {
    let canonical = |p: &Path| {
        p.canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let (from, to) = (canonical(from), canonical(to));
    let up = from.components().skip(1).map(|_| "..");
    let down = to
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_str().expect("UTF-8"));
    up.chain(down).collect::<Vec<_>>().join("/")
}
