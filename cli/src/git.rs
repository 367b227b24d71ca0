//! Policies as a git revision holds them, for `sluice diff REV -- PATHS`.
//!
//! The revision's files under the paths are read with `git ls-tree` and
//! `git cat-file --batch` into a private scratch directory (removed when
//! done): the working tree, the index and HEAD are never touched, and the
//! files are then read exactly as a directory walk reads the head's.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A revision's files on disk; removed on drop.
pub struct Snapshot {
    root: PathBuf,
    /// Where the working directory's paths are inside the snapshot.
    pub base: PathBuf,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn git(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git")
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.trim().to_owned());
    }
    Ok(out.stdout)
}

fn scratch_dir() -> Result<PathBuf, String> {
    let tmp = std::env::temp_dir();
    for n in 0..100u32 {
        let d = tmp.join(format!("sluice-rev-{}-{n}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot make a scratch directory: {e}")),
        }
    }
    Err("no free scratch directory name".into())
}

/// A path as a pathspec: what the user wrote, relative to the working
/// directory; `.` for the directory itself.
fn pathspec(p: &Path) -> String {
    let s = p.display().to_string();
    let s = s.trim_start_matches("./");
    if s.is_empty() {
        ".".to_owned()
    } else {
        s.to_owned()
    }
}

/// Reads `paths` (relative to the working directory) as revision `rev`
/// holds them. Every path must exist there; files larger than `limit`
/// are kept only as far as needed to be reported as too large.
pub fn snapshot(rev: &str, paths: &[PathBuf], limit: u64) -> Result<Snapshot, String> {
    if rev.starts_with('-') {
        return Err(format!("`{rev}` is not a git revision"));
    }
    let commit = format!("{rev}^{{commit}}");
    git(&["rev-parse", "--verify", "--quiet", &commit])
        .map_err(|_| format!("`{rev}` is not a revision of this git repository"))?;
    let prefix = String::from_utf8_lossy(&git(&["rev-parse", "--show-prefix"])?)
        .trim()
        .to_owned();
    let root = scratch_dir()?;
    let snap = Snapshot {
        base: root.join(&prefix),
        root,
    };
    let mut entries = Vec::new();
    for p in paths {
        if p.is_absolute() {
            return Err(format!(
                "{}: give paths relative to the working directory with a revision",
                p.display()
            ));
        }
        let spec = pathspec(p);
        let listed = git(&["ls-tree", "-r", "-l", "-z", "--full-name", rev, "--", &spec])?;
        let before = entries.len();
        for rec in listed.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let rec = String::from_utf8_lossy(rec);
            let Some((meta, path)) = rec.split_once('\t') else {
                continue;
            };
            let f: Vec<&str> = meta.split_whitespace().collect();
            if let [mode, "blob", oid, size] = f[..] {
                entries.push((
                    mode.to_owned(),
                    oid.to_owned(),
                    size.parse::<u64>().unwrap_or(0),
                    path.to_owned(),
                ));
            }
        }
        if entries.len() == before {
            return Err(format!("{spec}: no such path at revision {rev}"));
        }
    }
    write_blobs(&snap.root, &entries, limit)?;
    Ok(snap)
}

/// Writes each blob under `root` at its path, streaming them out of one
/// `git cat-file --batch`.
fn write_blobs(
    root: &Path,
    entries: &[(String, String, u64, String)],
    limit: u64,
) -> Result<(), String> {
    let mut child = Command::new("git")
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("git cat-file: no stdin")?;
    let oids: Vec<String> = entries.iter().map(|e| e.1.clone()).collect();
    // Requests are written from a thread: git answers while it reads, and
    // a full pipe either way would otherwise stall both.
    let writer = std::thread::spawn(move || {
        for o in oids {
            if writeln!(stdin, "{o}").is_err() {
                break;
            }
        }
    });
    let mut out = BufReader::new(child.stdout.take().ok_or("git cat-file: no stdout")?);
    let mut result = Ok(());
    for (mode, _, _, path) in entries {
        let mut header = String::new();
        if out.read_line(&mut header).map_err(|e| e.to_string())? == 0 {
            result = Err("git cat-file ended early".to_owned());
            break;
        }
        let size: u64 = header
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("git cat-file: unexpected answer `{}`", header.trim()))?;
        let dest = root.join(path);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        // More than the limit is not needed to say it is too large.
        let keep = size.min(limit.saturating_add(1));
        let mut body = Vec::with_capacity(usize::try_from(keep).unwrap_or(0));
        (&mut out)
            .take(keep)
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())?;
        std::io::copy(&mut (&mut out).take(size - keep + 1), &mut std::io::sink())
            .map_err(|e| e.to_string())?;
        if mode == "120000" {
            let target = String::from_utf8_lossy(&body).into_owned();
            let _ = std::os::unix::fs::symlink(target, &dest);
        } else {
            std::fs::write(&dest, &body).map_err(|e| format!("{}: {e}", dest.display()))?;
        }
    }
    let _ = writer.join();
    let _ = child.wait();
    result
}
