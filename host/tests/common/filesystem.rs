//! A small filesystem of a test's own, to fill up: what a database or token on a full disk
//! meets.

use std::path::{Path, PathBuf};

/// A filesystem of its own, small enough to fill (a tmpfs: mounting needs root, as the test
/// set-up has), unmounted when dropped.
pub struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    pub fn mount(mib: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFilesystem { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a filler file until the filesystem is full.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&[0u8; 512]);
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
