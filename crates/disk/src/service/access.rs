//! Access to a disk's data through a time-limited URL (`beginGetAccess`): the grant opens
//! the disk with its keys and serves its plaintext (read access), or takes page writes and
//! encrypts them on arrival (write access, for a disk created for upload), until it
//! expires or `endGetAccess` ends it; ending an upload checks the VHD footer it received.
//! A disk with an active grant cannot start in a VM, and a disk in a running VM cannot be
//! granted.

use std::sync::{Arc, Mutex};

use atrest_crypto::{random_hex, sha256};
use atrest_vhd::{Footer, FOOTER_LEN};

use super::Compute;
use crate::error::ComputeError;
use crate::model::Disk;
use atrest_blocks::{BlockError, Change, Volume};

/// The longest a grant may last: Azure's limit for `durationInSeconds`.
const MAX_ACCESS_SECONDS: u64 = 5 * 24 * 3600;

/// Read access granted to one disk.
pub struct Grant {
    /// The disk's resource group.
    pub resource_group: String,
    /// The disk's name.
    pub name: String,
    /// When the grant ends, seconds since the epoch.
    pub expires: i64,
    /// The footer that follows the data when the disk is served as a fixed VHD.
    pub footer: [u8; FOOTER_LEN],
    /// Whether the grant takes page writes (an upload) rather than serving reads.
    pub write: bool,
    /// The disk's resource id.
    pub disk_id: String,
    /// Whether the URL also needs a bearer token with the disk's data action.
    pub needs_token: bool,
    /// Whether the grant is to a snapshot rather than a disk.
    pub snapshot: bool,
    /// The incremental snapshot family the snapshot belongs to, if any.
    family: Option<String>,
    /// The footer an upload has written so far.
    uploaded: Mutex<[u8; FOOTER_LEN]>,
    file: Volume,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("resource_group", &self.resource_group)
            .field("name", &self.name)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Grant {
    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.file.size()
    }

    /// The plaintext at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.file.read(offset, buf)
    }

    /// The ranges that hold data, unit-aligned (a page list without a previous snapshot).
    pub fn data_ranges(&self) -> Result<Vec<Change>, BlockError> {
        let mut ranges = Vec::new();
        let mut pos = 0;
        for (len, zero) in self.file.extents(0, self.size())? {
            if !zero {
                ranges.push(Change {
                    first: pos,
                    last: pos + len - 1,
                    cleared: false,
                });
            }
            pos += len;
        }
        Ok(ranges)
    }

    /// What changed since `older`, an earlier incremental snapshot of the same disk;
    /// `None` if the two are not of one family.
    pub fn changes_since(&self, older: &Grant) -> Option<Result<Vec<Change>, BlockError>> {
        match (&self.family, &older.family) {
            (Some(a), Some(b)) if a == b => Some(self.file.changes_since(&older.file)),
            _ => None,
        }
    }

    /// Writes `data` at `offset` of the VHD being uploaded: the disk's part encrypted with
    /// its keys, the footer's part kept for `endGetAccess` to check. `None` clears the
    /// range (`x-ms-page-write: clear`) of `len` bytes.
    pub fn write_pages(
        &self,
        offset: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<(), BlockError> {
        let size = self.size();
        let data_end = (offset + len).min(size);
        if offset < data_end {
            let n = data_end - offset;
            match data {
                Some(bytes) => self.file.write(offset, &bytes[..n as usize])?,
                None => self.file.write_zeroes(offset, n)?,
            }
        }
        let mut footer = self.uploaded.lock().expect("footer lock");
        for pos in offset.max(size)..offset + len {
            let byte = data.map_or(0, |bytes| bytes[(pos - offset) as usize]);
            footer[(pos - size) as usize] = byte;
        }
        Ok(())
    }
}

impl Compute {
    /// Grants access to disk `name` (or, `kind` being the store kind, to a snapshot, for
    /// reading) for `seconds`; returns the secret token of the URL (only its digest is
    /// kept) and when the grant expires. A new grant replaces one the disk had.
    pub async fn grant_access(
        &self,
        kind: &'static str,
        resource_group: &str,
        name: &str,
        seconds: u64,
        write: bool,
        now: i64,
    ) -> Result<(String, i64), ComputeError> {
        if seconds == 0 || seconds > MAX_ACCESS_SECONDS {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("The value {seconds} of parameter 'durationInSeconds' is out of range: it must be between 1 and {MAX_ACCESS_SECONDS}."),
            ));
        }
        let _guard = self.changes.lock().await;
        let disk: Disk = self.get(kind, resource_group, name)?;
        match (write, disk.awaiting_upload) {
            (true, false) => {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!("Disk '{name}' was not created for upload (createOption Upload); write access is only for uploads."),
                ))
            }
            (false, true) => {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!("Disk '{name}' is waiting for its upload (ReadyToUpload); it has no data to read yet."),
                ))
            }
            _ => {}
        }
        if disk.copying {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!(
                    "Snapshot '{name}' is still being copied ({:.0}%); its data is not complete.",
                    disk.completion_percent
                ),
            ));
        }
        if disk.network_access_policy == "DenyAll" {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!(
                    "Disk '{name}' has networkAccessPolicy DenyAll: its data cannot be exported."
                ),
            ));
        }
        if !disk.is_snapshot() && self.key_available(&disk).is_some() {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!("Disk '{name}' is attached to a running virtual machine; stop it before granting access."),
            ));
        }
        let layers = self.unwrap_layers(&disk).await?;
        let file = self.open_volume(&disk, layers).await?;
        let token = random_hex(32);
        let expires = now + seconds as i64;
        let footer =
            Footer::fixed(disk.size_bytes(), disk.created, uuid_bytes(&disk.unique_id)).encode();
        let grant = Arc::new(Grant {
            resource_group: disk.resource_group.clone(),
            name: disk.name.clone(),
            expires,
            footer,
            write,
            disk_id: disk.id.clone(),
            needs_token: disk.data_access_aad,
            snapshot: disk.is_snapshot(),
            family: disk.family_id.clone(),
            uploaded: Mutex::new([0; FOOTER_LEN]),
            file,
        });
        let mut grants = self.grants.write().expect("grants lock");
        grants.retain(|_, g| !g.is(&disk));
        grants.insert(sha256(token.as_bytes()), grant);
        Ok((token, expires))
    }

    /// Ends every grant of disk (or, `kind` being the store kind, snapshot) `name`; false
    /// if it had none. Ending an upload checks the footer it wrote (a fixed VHD of exactly
    /// the disk's size) and makes the disk usable; a bad footer is refused and the upload
    /// stays open.
    pub async fn end_access(
        &self,
        kind: &'static str,
        resource_group: &str,
        name: &str,
    ) -> Result<bool, ComputeError> {
        let _guard = self.changes.lock().await;
        let mut disk: Disk = self.get(kind, resource_group, name)?;
        let upload = self
            .grants
            .read()
            .expect("grants lock")
            .values()
            .find(|g| g.is(&disk) && g.write)
            .cloned();
        if let Some(upload) = upload {
            let footer = *upload.uploaded.lock().expect("footer lock");
            let parsed = Footer::parse(&footer).map_err(|e| {
                ComputeError::invalid(
                    "InvalidParameter",
                    format!("The uploaded VHD is not valid: {e}."),
                )
            })?;
            if parsed.current_size != disk.size_bytes() {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!(
                        "The uploaded VHD's size is {} bytes; the disk was created for {} bytes.",
                        parsed.current_size,
                        disk.size_bytes()
                    ),
                ));
            }
            upload.file.flush()?;
            disk.awaiting_upload = false;
            self.save_disk(&disk)?;
        }
        let mut grants = self.grants.write().expect("grants lock");
        let before = grants.len();
        grants.retain(|_, g| !g.is(&disk));
        Ok(grants.len() != before)
    }

    /// The live grant whose token is `token`, if any; an expired one is dropped.
    pub fn granted(&self, token: &str, now: i64) -> Option<Arc<Grant>> {
        let key = sha256(token.as_bytes());
        let grant = self
            .grants
            .read()
            .expect("grants lock")
            .get(&key)
            .cloned()?;
        if grant.expires > now {
            return Some(grant);
        }
        self.grants.write().expect("grants lock").remove(&key);
        None
    }

    /// Whether disk `disk` has a live grant, and whether it is for writing: its
    /// `diskState` is then `ActiveUpload`, else `ActiveSAS`.
    pub fn access_active(&self, disk: &Disk, now: i64) -> Option<bool> {
        self.grants
            .read()
            .expect("grants lock")
            .values()
            .find(|g| g.is(disk) && g.expires > now)
            .map(|g| g.write)
    }
}

impl Grant {
    fn is(&self, disk: &Disk) -> bool {
        self.disk_id.eq_ignore_ascii_case(&disk.id)
    }
}

/// The 16 bytes of a UUID's hex digits (the VHD footer's unique id); zeros where the text
/// is not hex.
fn uuid_bytes(uuid: &str) -> [u8; 16] {
    let hex: Vec<u8> = uuid
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| (b as char).to_digit(16).unwrap_or(0) as u8)
        .collect();
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = pair[0] << 4 | pair[1];
    }
    out
}
