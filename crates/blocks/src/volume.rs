//! One open disk: reads and writes of plaintext, encrypted with AES-256-XTS in 4 KiB data
//! units whose unit number (offset / 4096 on the disk) is the tweak, over chunks.
//!
//! A chunk committed in a manifest is never written again. The first write to a chunk
//! after a flush gives it a new generation: a new local file (a copy of the old chunk's
//! data when the write covers only part of it), written in place until the next flush
//! seals it. Flushing makes the sealed chunks durable, then commits the manifest that
//! names them; a flush that fails commits nothing and the next one tries again.
//!
//! A unit whose stored bytes are all zero reads as zeros (a real ciphertext is all zeros
//! with probability 2^-32768), so zero-filled units are stored as zeros, and whole units
//! zeroed become holes in the chunk file; a chunk zeroed whole leaves the manifest.
//!
//! With more than one data key (double encryption) each unit is encrypted with every
//! layer in turn, innermost first. [`Volume::revoke`] drops (and so wipes) the keys and
//! every access fails until [`Volume::restore`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use atrest_xts::XtsKey;
use rustix::fs::{fallocate, seek, FallocateFlags, SeekFrom};
use rustix::io::Errno;

use crate::error::BlockError;
use crate::files::{copy_sparse, make_dir};
use crate::manifest::{valid_origin, ChunkRef, Manifest, Version, CHUNK, UNIT};
use crate::store::BlockStore;

/// Open chunk files kept per volume; past it, one is closed for each opened.
const OPEN_FILES: usize = 1024;

/// A range where one volume's data differs from another's (inclusive, unit-aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The first byte.
    pub first: u64,
    /// The last byte.
    pub last: u64,
    /// Whether the range reads as zeros in the newer volume.
    pub cleared: bool,
}

/// A chunk in the volume's current view.
#[derive(Debug, Clone)]
struct Live {
    chunk: ChunkRef,
    /// Written since the last seal: its file may still change.
    dirty: bool,
}

struct State {
    /// The last committed manifest and its stored version.
    committed: Manifest,
    version: Version,
    /// What each chunk holds now; no entry reads as zeros.
    live: BTreeMap<u32, Live>,
    /// Chunks changed since the last seal.
    changed: BTreeSet<u32>,
    next_gen: u64,
    /// Committed chunks of older generations may be named by a copy of the manifest
    /// (a snapshot): they are never written again. Younger ones, on the data directory,
    /// are rewritten in place. Opening a disk freezes everything it has.
    frozen_gen: u64,
    /// Open chunk files, one per index: the chunk it was opened for, and the file.
    files: HashMap<u32, (ChunkRef, Arc<File>)>,
}

/// One disk's blocks, open for I/O.
pub struct Volume {
    disk: Arc<str>,
    size: u64,
    store: Arc<BlockStore>,
    /// The data keys, innermost layer first; `None` while withdrawn.
    layers: Mutex<Option<Vec<XtsKey>>>,
    state: Mutex<State>,
    /// Held shared by every write while it runs, and exclusively while a flush seals the
    /// chunks it will commit, so none is sealed with a write half done.
    writes: RwLock<()>,
    /// One flush at a time.
    flushing: Mutex<()>,
    /// One new generation made at a time, so two writes to a sealed chunk make one.
    new_generations: Mutex<()>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("disk", &self.disk)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A piece of a request that falls in one chunk.
struct Piece {
    index: u32,
    /// Offset within the chunk.
    at: u64,
    /// Offset within the request.
    from: usize,
    len: usize,
}

/// Splits `offset..offset + len` at chunk boundaries.
fn pieces(offset: u64, len: u64) -> impl Iterator<Item = Piece> {
    let end = offset + len;
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let index = pos / CHUNK;
        let at = pos % CHUNK;
        let n = (CHUNK - at).min(end - pos);
        let piece = Piece {
            index: index as u32,
            at,
            from: (pos - offset) as usize,
            len: n as usize,
        };
        pos += n;
        Some(piece)
    })
}

impl Volume {
    pub(crate) fn new(
        store: Arc<BlockStore>,
        disk: Arc<str>,
        manifest: Manifest,
        version: Version,
        layers: Vec<XtsKey>,
    ) -> Result<Self, BlockError> {
        let size = manifest.size;
        if size == 0 || !size.is_multiple_of(UNIT as u64) {
            return Err(BlockError::BadSize(size));
        }
        let live = manifest
            .chunks
            .iter()
            .map(|(i, c)| {
                (
                    *i,
                    Live {
                        chunk: c.clone(),
                        dirty: false,
                    },
                )
            })
            .collect();
        Ok(Volume {
            size,
            store,
            layers: Mutex::new(Some(layers)),
            state: Mutex::new(State {
                next_gen: manifest.next_gen,
                frozen_gen: manifest.next_gen,
                committed: manifest,
                version,
                live,
                changed: BTreeSet::new(),
                files: HashMap::new(),
            }),
            disk,
            writes: RwLock::new(()),
            flushing: Mutex::new(()),
            new_generations: Mutex::new(()),
        })
    }

    fn layers(&self) -> MutexGuard<'_, Option<Vec<XtsKey>>> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops (and so wipes) the data keys; every access fails until [`Self::restore`].
    pub fn revoke(&self) {
        *self.layers() = None;
    }

    /// Brings the data keys back after [`Self::revoke`].
    pub fn restore(&self, layers: Vec<XtsKey>) {
        *self.layers() = Some(layers);
    }

    /// Whether the data keys are present.
    pub fn is_available(&self) -> bool {
        self.layers().is_some()
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Freezes what the volume holds now: flushed first, so the committed manifest names
    /// it all, and from then on never written again, so a copy of that manifest (a
    /// snapshot) keeps it.
    pub fn freeze(&self) -> Result<(), BlockError> {
        freeze_together(&[self], || Ok(()))
    }

    /// The manifest as of the last flush.
    pub fn committed(&self) -> Manifest {
        self.state().committed.clone()
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(BlockError::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    fn chunk_len(&self, index: u32) -> u64 {
        CHUNK.min(self.size - u64::from(index) * CHUNK)
    }

    /// The open file of `chunk` (index `index`), fetching it into the cache if needed.
    fn open_chunk(&self, index: u32, chunk: &ChunkRef) -> Result<Arc<File>, BlockError> {
        if let Some((open, file)) = self.state().files.get(&index) {
            if open == chunk {
                return Ok(file.clone());
            }
        }
        let path = self.store.fetch(&chunk.origin, index, chunk.gen)?;
        let file = Arc::new(OpenOptions::new().read(true).write(true).open(path)?);
        self.keep_open(index, chunk, &file);
        Ok(file)
    }

    /// Keeps `file` open as chunk `index`'s.
    fn keep_open(&self, index: u32, chunk: &ChunkRef, file: &Arc<File>) {
        let mut state = self.state();
        if state.files.len() >= OPEN_FILES && !state.files.contains_key(&index) {
            let any = *state.files.keys().next().expect("the map is full");
            state.files.remove(&any);
        }
        state.files.insert(index, (chunk.clone(), file.clone()));
    }

    /// The file chunk `index` reads from now, if it holds data.
    fn readable(&self, index: u32) -> Result<Option<Arc<File>>, BlockError> {
        let chunk = match self.state().live.get(&index) {
            Some(live) => live.chunk.clone(),
            None => return Ok(None),
        };
        self.open_chunk(index, &chunk).map(Some)
    }

    /// The file writes to chunk `index` go to: its dirty generation, a committed chunk that
    /// may be rewritten in place, or a new generation (a copy of the current chunk's data
    /// unless `whole`, a write that replaces all of it).
    fn writable(&self, index: u32, whole: bool) -> Result<Arc<File>, BlockError> {
        let in_place = self.store.rewrites_in_place();
        let dirty = |state: &mut State| match state.live.get(&index) {
            Some(Live { chunk, dirty: true }) => Some(chunk.clone()),
            // A chunk of the data directory that nothing else names: its next flush
            // makes the rewrite durable again.
            Some(Live { chunk, .. })
                if in_place && chunk.origin == self.disk && chunk.gen >= state.frozen_gen =>
            {
                let chunk = chunk.clone();
                state.changed.insert(index);
                Some(chunk)
            }
            _ => None,
        };
        let dirty_now = dirty(&mut self.state());
        if let Some(chunk) = dirty_now {
            return self.open_chunk(index, &chunk);
        }
        let _one = self
            .new_generations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (current, chunk) = {
            let mut state = self.state();
            if let Some(chunk) = dirty(&mut state) {
                drop(state);
                return self.open_chunk(index, &chunk);
            }
            let gen = state.next_gen;
            state.next_gen += 1;
            let chunk = ChunkRef {
                origin: self.disk.clone(),
                gen,
            };
            (state.live.get(&index).map(|l| l.chunk.clone()), chunk)
        };
        let path = self.store.local_path(&self.disk, index, chunk.gen);
        make_dir(path.parent().expect("a chunk file has a directory"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let len = self.chunk_len(index);
        file.set_len(len)?;
        if let (Some(old), false) = (&current, whole) {
            copy_sparse(&*self.open_chunk(index, old)?, 0, &file, len)?;
        }
        let file = Arc::new(file);
        self.keep_open(index, &chunk, &file);
        let mut state = self.state();
        state.live.insert(index, Live { chunk, dirty: true });
        state.changed.insert(index);
        Ok(file)
    }

    /// Drops chunk `index` from the current view (it reads as zeros); a dirty generation,
    /// which nothing has sealed, is deleted.
    fn drop_chunk(&self, index: u32) -> Result<(), BlockError> {
        let mut state = self.state();
        if let Some(old) = state.live.remove(&index) {
            state.changed.insert(index);
            state.files.remove(&index);
            if old.dirty {
                fs::remove_file(
                    self.store
                        .local_path(&old.chunk.origin, index, old.chunk.gen),
                )?;
            }
        }
        Ok(())
    }

    /// Decrypts whole units in place; `data` starts at disk unit `first`.
    fn decrypt_units(&self, first: u64, data: &mut [u8]) -> Result<(), BlockError> {
        let mut layers = self.layers();
        let keys = layers.as_mut().ok_or(BlockError::KeyUnavailable)?;
        for (unit, block) in (first..).zip(data.chunks_exact_mut(UNIT)) {
            if block.iter().any(|b| *b != 0) {
                for key in keys.iter_mut().rev() {
                    key.decrypt(unit, block)?;
                }
            }
        }
        Ok(())
    }

    /// Encrypts whole units of plaintext in place; `data` starts at disk unit `first`.
    /// All-zero units stay zero.
    fn encrypt_units(&self, first: u64, data: &mut [u8]) -> Result<(), BlockError> {
        let mut layers = self.layers();
        let keys = layers.as_mut().ok_or(BlockError::KeyUnavailable)?;
        for (unit, block) in (first..).zip(data.chunks_exact_mut(UNIT)) {
            if block.iter().any(|b| *b != 0) {
                for key in keys.iter_mut() {
                    key.encrypt(unit, block)?;
                }
            }
        }
        Ok(())
    }

    /// Reads the stored bytes of whole units at `offset` (unit-aligned) into `data`.
    fn read_stored(&self, offset: u64, data: &mut [u8]) -> Result<(), BlockError> {
        for p in pieces(offset, data.len() as u64) {
            let out = &mut data[p.from..p.from + p.len];
            match self.readable(p.index)? {
                Some(file) => file.read_exact_at(out, p.at)?,
                None => out.fill(0),
            }
        }
        Ok(())
    }

    /// Reads and decrypts the whole units at `offset` (unit-aligned) into `data`.
    fn read_units(&self, offset: u64, data: &mut [u8]) -> Result<(), BlockError> {
        if !self.is_available() {
            return Err(BlockError::KeyUnavailable);
        }
        self.read_stored(offset, data)?;
        self.decrypt_units(offset / UNIT as u64, data)
    }

    /// The units `offset`, `len` touches: where the first starts and how many bytes they span.
    fn span(offset: u64, len: usize) -> (u64, usize) {
        let unit = UNIT as u64;
        let first = offset / unit * unit;
        let end = (offset + len as u64).div_ceil(unit) * unit;
        (first, (end - first) as usize)
    }

    /// Fills `buf` with the plaintext at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (first, span) = Self::span(offset, buf.len());
        if span == buf.len() {
            return self.read_units(first, buf);
        }
        let mut units = vec![0u8; span];
        self.read_units(first, &mut units)?;
        let at = (offset - first) as usize;
        buf.copy_from_slice(&units[at..at + buf.len()]);
        Ok(())
    }

    /// Stores encrypted whole units at `offset` (unit-aligned).
    fn write_stored(&self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        for p in pieces(offset, data.len() as u64) {
            let whole = p.at == 0 && p.len as u64 == self.chunk_len(p.index);
            let file = self.writable(p.index, whole)?;
            file.write_all_at(&data[p.from..p.from + p.len], p.at)?;
        }
        Ok(())
    }

    /// Writes `data` at `offset`: the units it touches are assembled (reading those it
    /// covers only partly), encrypted and stored.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.check(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let _writing = self.writes.read().unwrap_or_else(|p| p.into_inner());
        let (first, span) = Self::span(offset, data.len());
        let at = (offset - first) as usize;
        let mut units = vec![0u8; span];
        if at != 0 {
            self.read_units(first, &mut units[..UNIT])?;
        }
        if !(at + data.len()).is_multiple_of(UNIT) && (span > UNIT || at == 0) {
            self.read_units(first + (span - UNIT) as u64, &mut units[span - UNIT..])?;
        }
        units[at..at + data.len()].copy_from_slice(data);
        self.encrypt_units(first / UNIT as u64, &mut units)?;
        self.write_stored(first, &units)
    }

    /// [`Self::write`] that may encrypt `data` in place (when it covers whole units) and
    /// so saves a copy; `data` holds ciphertext or plaintext afterwards.
    pub fn write_in_place(&self, offset: u64, data: &mut [u8]) -> Result<(), BlockError> {
        if !offset.is_multiple_of(UNIT as u64) || !data.len().is_multiple_of(UNIT) {
            return self.write(offset, data);
        }
        self.check(offset, data.len() as u64)?;
        let _writing = self.writes.read().unwrap_or_else(|p| p.into_inner());
        self.encrypt_units(offset / UNIT as u64, data)?;
        self.write_stored(offset, data)
    }

    /// Zeroes `len` bytes at `offset`. Chunks zeroed whole leave the manifest; whole units
    /// become holes in their chunk; partial units at the edges are rewritten.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.check(offset, len)?;
        if !self.is_available() {
            return Err(BlockError::KeyUnavailable);
        }
        let unit = UNIT as u64;
        let end = offset + len;
        let (whole_start, whole_end) = (offset.div_ceil(unit) * unit, end / unit * unit);
        if whole_start >= whole_end {
            return self.fill_zeroes(offset, len);
        }
        self.fill_zeroes(offset, whole_start - offset)?;
        {
            let _writing = self.writes.read().unwrap_or_else(|p| p.into_inner());
            for p in pieces(whole_start, whole_end - whole_start) {
                if !self.state().live.contains_key(&p.index) {
                    continue;
                }
                if p.at == 0 && p.len as u64 == self.chunk_len(p.index) {
                    self.drop_chunk(p.index)?;
                    continue;
                }
                let file = self.writable(p.index, false)?;
                let punched = fallocate(
                    &*file,
                    FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                    p.at,
                    p.len as u64,
                );
                if punched.is_err() {
                    // A file system without hole punching: store zeros, which read the same.
                    file.write_all_at(&vec![0u8; p.len], p.at)?;
                }
            }
        }
        self.fill_zeroes(whole_end, end - whole_end)
    }

    /// Zeroes `len` bytes at `offset` by writing zeros, a bounded piece at a time.
    pub fn fill_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        const PIECE: u64 = 8 << 20;
        self.check(offset, len)?;
        let zeros = vec![0u8; PIECE.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(PIECE);
            self.write(offset + done, &zeros[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// Splits `offset..offset + len` into runs that were never written or were zeroed
    /// (`true`: they read as zeros without a byte being read) and runs that may hold
    /// data (`false`), as `(length, hole)` pairs: chunks without data, then holes within
    /// chunk files (`SEEK_DATA`, `SEEK_HOLE`).
    pub fn allocation(&self, offset: u64, len: u64) -> Result<Vec<(u64, bool)>, BlockError> {
        self.check(offset, len)?;
        let mut runs: Vec<(u64, bool)> = Vec::new();
        let mut push = |n: u64, hole: bool| match runs.last_mut() {
            Some((run, h)) if *h == hole => *run += n,
            _ if n > 0 => runs.push((n, hole)),
            _ => {}
        };
        for p in pieces(offset, len) {
            let Some(file) = self.readable(p.index)? else {
                push(p.len as u64, true);
                continue;
            };
            let (mut pos, end) = (p.at, p.at + p.len as u64);
            while pos < end {
                let data = match seek(&*file, SeekFrom::Data(pos)) {
                    Ok(d) => d.min(end),
                    Err(Errno::NXIO) => end,
                    Err(e) => return Err(io::Error::from(e).into()),
                };
                push(data - pos, true);
                pos = data;
                if pos < end {
                    let hole = seek(&*file, SeekFrom::Hole(pos))
                        .map_err(io::Error::from)?
                        .min(end);
                    push(hole - pos, false);
                    pos = hole;
                }
            }
        }
        Ok(runs)
    }

    /// Splits `offset..offset + len` into runs of units that hold data (`false`) or read
    /// as zeros (`true`), as `(length, zero)` pairs, from the stored bytes (no key needed).
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, bool)>, BlockError> {
        self.check(offset, len)?;
        let unit = UNIT as u64;
        let end = offset + len;
        let (first, span) = Self::span(offset, len as usize);
        let mut runs: Vec<(u64, bool)> = Vec::new();
        let mut stored = Vec::new();
        // One read per chunk piece of the unit-aligned span; chunks without data read none.
        for p in pieces(first, span as u64) {
            let file = self.readable(p.index)?;
            if let Some(f) = &file {
                stored.resize(p.len, 0);
                f.read_exact_at(&mut stored, p.at)?;
            }
            let piece_start = first + p.from as u64;
            for u in 0..p.len / UNIT {
                let unit_start = piece_start + (u * UNIT) as u64;
                let piece = (unit_start + unit).min(end) - unit_start.max(offset);
                let zero =
                    file.is_none() || stored[u * UNIT..(u + 1) * UNIT].iter().all(|b| *b == 0);
                match runs.last_mut() {
                    Some((run, z)) if *z == zero => *run += piece,
                    _ => runs.push((piece, zero)),
                }
            }
        }
        Ok(runs)
    }

    /// The ranges where this volume's data differs from `older`'s, two volumes of one
    /// data key (a disk's snapshots). Found from the stored bytes, without
    /// the keys: equal plaintext under one key and tweak is equal ciphertext. Chunks both
    /// share are skipped unread.
    pub fn changes_since(&self, older: &Volume) -> Result<Vec<Change>, BlockError> {
        let (mine, theirs) = (self.chunk_map(), older.chunk_map());
        let indices: BTreeSet<u32> = mine.keys().chain(theirs.keys()).copied().collect();
        let unit = UNIT as u64;
        let mut ranges: Vec<Change> = Vec::new();
        let (mut new, mut old) = (vec![0u8; CHUNK as usize], vec![0u8; CHUNK as usize]);
        for index in indices {
            if mine.get(&index) == theirs.get(&index) {
                continue;
            }
            let start = u64::from(index) * CHUNK;
            if start >= self.size {
                continue;
            }
            let len = self.chunk_len(index) as usize;
            for (volume, buf) in [(self, &mut new), (older, &mut old)] {
                buf[..len].fill(0);
                let stored = start < volume.size;
                if let (true, Some(file)) = (stored, volume.readable(index)?) {
                    let n = len.min(volume.chunk_len(index) as usize);
                    file.read_exact_at(&mut buf[..n], 0)?;
                }
            }
            for (i, (a, b)) in new[..len]
                .chunks(UNIT)
                .zip(old[..len].chunks(UNIT))
                .enumerate()
            {
                if a == b {
                    continue;
                }
                let cleared = a.iter().all(|x| *x == 0);
                let first = start + i as u64 * unit;
                match ranges.last_mut() {
                    Some(c) if c.last + 1 == first && c.cleared == cleared => c.last += unit,
                    _ => ranges.push(Change {
                        first,
                        last: first + unit - 1,
                        cleared,
                    }),
                }
            }
        }
        Ok(ranges)
    }

    /// The chunk each index holds now.
    fn chunk_map(&self) -> BTreeMap<u32, ChunkRef> {
        self.state()
            .live
            .iter()
            .map(|(i, l)| (*i, l.chunk.clone()))
            .collect()
    }

    /// Makes every completed write durable: seals the chunks changed since the last
    /// flush, makes them durable in the store, then commits the manifest naming them.
    pub fn flush(&self) -> Result<(), BlockError> {
        let _one = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let sealed = {
            let _no_writes = self.writes.write().unwrap_or_else(|p| p.into_inner());
            self.seal()
        };
        self.commit(sealed)
    }

    /// Takes the chunks changed since the last flush out of the write path: the manifest
    /// that names them, to be committed (`None` if nothing changed). The caller holds
    /// `writes` for writing, so no write is half done.
    fn seal(&self) -> Option<Sealed> {
        let mut state = self.state();
        if state.changed.is_empty() {
            return None;
        }
        let changed = std::mem::take(&mut state.changed);
        let mut manifest = state.committed.clone();
        manifest.next_gen = state.next_gen;
        manifest.size = self.size;
        let mut chunks = Vec::new();
        for index in &changed {
            match state.live.get_mut(index) {
                Some(live) => {
                    live.dirty = false;
                    manifest.chunks.insert(*index, live.chunk.clone());
                    chunks.push((live.chunk.origin.clone(), *index, live.chunk.gen));
                }
                None => {
                    manifest.chunks.remove(index);
                }
            }
        }
        Some(Sealed {
            manifest,
            version: state.version.clone(),
            chunks,
            changed,
        })
    }

    /// Makes sealed chunks durable, then commits their manifest. If anything fails,
    /// nothing is committed and the next flush seals the chunks again.
    fn commit(&self, sealed: Option<Sealed>) -> Result<(), BlockError> {
        let Some(Sealed {
            manifest,
            version,
            chunks,
            changed,
        }) = sealed
        else {
            return Ok(());
        };
        let unchanged = manifest == self.state().committed;
        let result = self.store.persist(&chunks).and_then(|()| {
            if unchanged {
                // Only chunks rewritten in place: made durable, nothing to commit.
                return Ok(version.clone());
            }
            self.store
                .save_manifest(&self.disk, &manifest, Some(&version))
        });
        let mut state = self.state();
        match result {
            Ok(version) => {
                state.committed = manifest;
                state.version = version;
                Ok(())
            }
            Err(e) => {
                state.changed.extend(changed);
                if !matches!(e, BlockError::Conflict(_)) {
                    tracing::warn!(disk = %self.disk, error = %e, "a flush failed; nothing was committed");
                }
                Err(e)
            }
        }
    }
}

/// What a flush takes out of the write path: the manifest to commit, the version it
/// replaces, the chunks it names that must be made durable first, and the chunk indexes
/// to seal again if it fails.
struct Sealed {
    manifest: Manifest,
    version: Version,
    chunks: Vec<(Arc<str>, u32, u64)>,
    changed: BTreeSet<u32>,
}

/// Freezes `volumes` at one instant and runs `then` on what they hold: writes to all of
/// them wait while each one's changes are sealed and its chunks frozen, so the manifests
/// committed next are one crash-consistent cut across the volumes (a write that completed
/// on one before a write began on another is in the cut whenever the later one is). No
/// flush of these volumes commits anything newer until `then` has run, so it sees the cut
/// (a copy of each committed manifest, for a backup of a machine's disks).
pub fn freeze_together<T>(
    volumes: &[&Volume],
    then: impl FnOnce() -> Result<T, BlockError>,
) -> Result<T, BlockError> {
    // Locks are taken in one global order (by address), so two cuts sharing a volume
    // cannot wait on each other.
    let mut volumes = volumes.to_vec();
    volumes.sort_by_key(|v| std::ptr::from_ref::<Volume>(v) as usize);
    volumes.dedup_by_key(|v| std::ptr::from_ref::<Volume>(v) as usize);
    let _flushes: Vec<_> = volumes
        .iter()
        .map(|v| v.flushing.lock().unwrap_or_else(|p| p.into_inner()))
        .collect();
    let sealed: Vec<Option<Sealed>> = {
        let _no_writes: Vec<_> = volumes
            .iter()
            .map(|v| v.writes.write().unwrap_or_else(|p| p.into_inner()))
            .collect();
        volumes
            .iter()
            .map(|v| {
                let sealed = v.seal();
                let mut state = v.state();
                state.frozen_gen = state.next_gen;
                sealed
            })
            .collect()
    };
    for (volume, sealed) in volumes.iter().zip(sealed) {
        volume.commit(sealed)?;
    }
    then()
}

impl BlockStore {
    /// Opens disk `disk` (its unique id) of `size` bytes with its data keys `layers`,
    /// innermost first: loads its manifest (creating an empty one, or migrating a block
    /// file of the single-file layout), and removes what a writer that died left behind.
    pub fn open_volume(
        self: &Arc<Self>,
        disk: &str,
        size: u64,
        layers: Vec<XtsKey>,
    ) -> Result<Volume, BlockError> {
        if !valid_origin(disk) {
            return Err(BlockError::Manifest {
                disk: disk.to_owned(),
                reason: "not a disk id".into(),
            });
        }
        if size == 0 || !size.is_multiple_of(UNIT as u64) {
            return Err(BlockError::BadSize(size));
        }
        let (mut manifest, version) = match self.load_manifest(disk)? {
            Some(found) => found,
            None => {
                let manifest = self.migrate_single_file(disk, size)?;
                let version = self.save_manifest(disk, &manifest, None)?;
                self.remove_single_file(disk)?;
                (manifest, version)
            }
        };
        self.remove_orphans(disk, manifest.next_gen)?;
        if size < manifest.size {
            return Err(BlockError::BadSize(size));
        }
        manifest.size = size;
        Volume::new(self.clone(), disk.into(), manifest, version, layers)
    }
}
