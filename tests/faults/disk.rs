//! The disk faults' tools: a tmpfs or an ext4 loop image mounted for one
//! scenario (made read-only under the gateway, repaired), and filling a
//! file system up.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::peers::{live, Live};
use crate::util::sh;

/// A file system mounted for one scenario, unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
    pub image: Option<PathBuf>,
}

impl Mount {
    pub fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let d = dir.to_string_lossy().into_owned();
        sh(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &d],
        )?;
        live(true, Live::Mount(dir.to_owned()));
        Ok(Mount {
            dir: dir.to_owned(),
            image: None,
        })
    }

    /// ext4 on a loop device with `errors=remount-ro`, as an SD card's root
    /// file system is mounted on Raspberry Pi OS.
    pub fn ext4(dir: &Path, image: &Path, mib: u64) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(image).map_err(|e| e.to_string())?;
        f.set_len(mib << 20).map_err(|e| e.to_string())?;
        drop(f);
        let img = image.to_string_lossy().into_owned();
        sh("mkfs.ext4", &["-q", "-F", &img])?;
        let m = Mount {
            dir: dir.to_owned(),
            image: Some(image.to_owned()),
        };
        m.mount_image()?;
        live(true, Live::Mount(dir.to_owned()));
        Ok(m)
    }

    pub fn mount_image(&self) -> Result<(), String> {
        let img = self.image.as_ref().ok_or("not an image")?;
        sh(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                &img.to_string_lossy(),
                &self.dir.to_string_lossy(),
            ],
        )
    }

    pub fn remount(&self, mode: &str) -> Result<(), String> {
        sh(
            "mount",
            &[
                "-o",
                &format!("remount,{mode}"),
                &self.dir.to_string_lossy(),
            ],
        )
    }

    /// What a worn card does: the kernel hits an error and remounts the file
    /// system read-only under the running gateway (ext4's test hook).
    pub fn fail_to_read_only(&self) -> Result<(), String> {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.dir)
            .output()
            .map_err(|e| e.to_string())?;
        let src = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let name = Path::new(&src)
            .file_name()
            .ok_or("no loop device")?
            .to_string_lossy()
            .into_owned();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "faults")
            .map_err(|e| format!("trigger_fs_error on {name}: {e}"))
    }

    /// Unmounts, repairs and mounts the image again read-write.
    pub fn repair(&self) -> Result<(), String> {
        let d = self.dir.to_string_lossy().into_owned();
        sh("umount", &[&d])?;
        if let Some(img) = &self.image {
            // e2fsck exits 1 when it fixed something: not an error here.
            let _ = sh("e2fsck", &["-fy", &img.to_string_lossy()]);
        }
        self.mount_image()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let d = self.dir.to_string_lossy().into_owned();
        if sh("umount", &[&d]).is_err() {
            let _ = sh("umount", &["-l", &d]);
        }
        live(false, Live::Mount(self.dir.clone()));
    }
}

/// Free bytes on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.to_string_lossy().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs on a NUL-terminated path into a zeroed struct.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return 0;
        }
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

/// Takes every free byte of the file system holding `dir`.
pub fn fill_up(dir: &Path, name: &str) {
    let free = free_bytes(dir);
    if free > 0 {
        let _ = std::fs::write(dir.join(name), vec![0u8; free as usize]);
    }
}
