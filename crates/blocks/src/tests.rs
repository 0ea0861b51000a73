//! The volume against a plain in-memory model, on the data directory and on an object
//! store (`file://`, the `object_store` crate's local backend; Azurite runs in the SDK
//! suite).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use atrest_xts::XtsKey;

use crate::{BlockError, BlockStore, Change, Collected, Volume, CHUNK, UNIT};

const MIB: u64 = 1 << 20;

fn key_from(seed: usize) -> XtsKey {
    let bytes: [u8; atrest_xts::KEY_LEN] = std::array::from_fn(|i| (i * 13 + seed) as u8);
    XtsKey::new(&bytes.into()).unwrap()
}

fn key() -> XtsKey {
    key_from(5)
}

/// A block store on each backend, in a temporary directory removed when it drops.
fn stores() -> Vec<(&'static str, tempfile::TempDir, Arc<BlockStore>)> {
    let local = tempfile::tempdir().unwrap();
    let local_store = BlockStore::open(&local.path().join("blocks"), None).unwrap();
    let object = tempfile::tempdir().unwrap();
    let url = format!("file://{}", object.path().join("bucket").display());
    let object_store = BlockStore::open(&object.path().join("blocks"), Some(&url)).unwrap();
    let memory = tempfile::tempdir().unwrap();
    let memory_store = BlockStore::in_memory(
        &memory.path().join("blocks"),
        Arc::new(object_store::memory::InMemory::new()),
    );
    vec![
        ("local", local, local_store),
        ("file", object, object_store),
        ("memory", memory, memory_store),
    ]
}

/// A small deterministic generator, so failures reproduce.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn read_all(volume: &Volume) -> Vec<u8> {
    let mut all = vec![0u8; volume.size() as usize];
    volume.read(0, &mut all).unwrap();
    all
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[test]
fn random_io_matches_a_model_across_chunks_flushes_and_reopening() {
    for (backend, dir, store) in stores() {
        let size = 3 * CHUNK + 8 * UNIT as u64;
        let volume = store.open_volume("disk-a", size, vec![key()]).unwrap();
        let mut model = vec![0u8; size as usize];
        let mut seed = 0x9e3779b97f4a7c15;
        for round in 0..400 {
            let offset = next(&mut seed) % size;
            let len = (next(&mut seed) % (CHUNK + 3 * UNIT as u64)).min(size - offset) as usize;
            match round % 9 {
                0 => {
                    volume.write_zeroes(offset, len as u64).unwrap();
                    model[offset as usize..offset as usize + len].fill(0);
                }
                4 => volume.flush().unwrap(),
                _ => {
                    let data: Vec<u8> = (0..len).map(|_| next(&mut seed) as u8 | 1).collect();
                    volume.write(offset, &data).unwrap();
                    model[offset as usize..offset as usize + len].copy_from_slice(&data);
                }
            }
            let probe = next(&mut seed) % size;
            let plen = (next(&mut seed) % 9000).min(size - probe) as usize;
            let mut got = vec![0xeeu8; plen];
            volume.read(probe, &mut got).unwrap();
            assert_eq!(
                got,
                model[probe as usize..probe as usize + plen],
                "{backend} round {round}"
            );
        }
        volume.flush().unwrap();
        drop(volume);
        let again = store.open_volume("disk-a", size, vec![key()]).unwrap();
        assert_eq!(read_all(&again), model, "{backend}");
        // No plaintext at rest: no stored file holds a written unit in the clear.
        let unit = model
            .chunks(UNIT)
            .find(|c| c.iter().all(|b| *b != 0))
            .unwrap();
        for file in files_under(dir.path()) {
            assert!(
                !file.windows(UNIT).any(|w| w == unit),
                "{backend}: plaintext at rest"
            );
        }
    }
}

#[test]
fn every_flushed_write_survives_a_writer_that_dies() {
    for (backend, _dir, store) in stores() {
        let size = 4 * CHUNK;
        let volume = store.open_volume("disk-b", size, vec![key()]).unwrap();
        volume.write(10, b"flushed").unwrap();
        volume.write(2 * CHUNK, &[7u8; 8192]).unwrap();
        volume.flush().unwrap();
        let flushed = read_all(&volume);
        // Unflushed: a write beside the flushed one in its chunk, and a new chunk.
        volume.write(5000, b"maybe").unwrap();
        volume.write(3 * CHUNK + 5, b"lost too").unwrap();
        // The writer dies: nothing is flushed, its new chunks stay behind.
        std::mem::forget(volume);
        let again = store.open_volume("disk-b", size, vec![key()]).unwrap();
        let mut after = read_all(&again);
        // A write into a chunk rewritten in place may have landed (as on any disk); the
        // flushed data around it is intact, and the new chunk was never committed.
        let maybe = &mut after[5000..5005];
        assert!(maybe == b"maybe" || maybe == [0; 5], "{backend}");
        maybe.fill(0);
        assert_eq!(after, flushed, "{backend}");
        let store_files = store.list_chunks(Some("disk-b")).unwrap();
        assert_eq!(
            store_files.len(),
            2,
            "{backend}: the orphans are gone: {store_files:?}"
        );
    }
}

#[test]
fn frozen_chunks_are_never_written_again() {
    for (backend, _dir, store) in stores() {
        let volume = store.open_volume("disk-c", 2 * CHUNK, vec![key()]).unwrap();
        volume.write(0, &[1u8; 3 * UNIT]).unwrap();
        volume.freeze().unwrap();
        let first = volume.committed();
        let before: Vec<Vec<u8>> = first
            .chunks
            .iter()
            .map(|(i, c)| std::fs::read(store.fetch(&c.origin, *i, c.gen).unwrap()).unwrap())
            .collect();
        volume.write(UNIT as u64, &[2u8; UNIT]).unwrap();
        volume.flush().unwrap();
        let second = volume.committed();
        assert_ne!(first.chunks[&0].gen, second.chunks[&0].gen, "{backend}");
        let after: Vec<Vec<u8>> = first
            .chunks
            .iter()
            .map(|(i, c)| std::fs::read(store.fetch(&c.origin, *i, c.gen).unwrap()).unwrap())
            .collect();
        assert_eq!(
            before, after,
            "{backend}: the first generation is unchanged"
        );
        let mut back = vec![0u8; 3 * UNIT];
        volume.read(0, &mut back).unwrap();
        assert_eq!(&back[..UNIT], &[1u8; UNIT][..]);
        assert_eq!(&back[UNIT..2 * UNIT], &[2u8; UNIT][..], "{backend}");
        // A flush with nothing new commits nothing.
        volume.flush().unwrap();
        assert_eq!(volume.committed(), second);
        // Unfrozen, a committed chunk is rewritten in place on the data directory (as a
        // disk file is) and never on an object store, whose objects are written once.
        volume.write(0, &[3u8; UNIT]).unwrap();
        volume.flush().unwrap();
        let third = volume.committed();
        assert_eq!(
            third.chunks[&0] == second.chunks[&0],
            backend == "local",
            "{backend}"
        );
        volume.read(0, &mut back).unwrap();
        assert_eq!(&back[..UNIT], &[3u8; UNIT][..]);
    }
}

#[test]
fn garbage_is_collected_after_its_grace_period_only() {
    for (backend, _dir, store) in stores() {
        let volume = store.open_volume("disk-d", 2 * CHUNK, vec![key()]).unwrap();
        volume.write(0, &[1u8; 4096]).unwrap();
        volume.freeze().unwrap();
        volume.write(0, &[2u8; 4096]).unwrap();
        volume.flush().unwrap();
        // Written but not flushed: not garbage, whatever its age.
        volume.write(CHUNK, &[3u8; 4096]).unwrap();
        assert_eq!(
            store.collect_garbage(100, 60).unwrap(),
            Collected {
                deleted: 0,
                waiting: 1
            },
            "{backend}: the superseded generation waits"
        );
        assert_eq!(
            store.collect_garbage(159, 60).unwrap(),
            Collected {
                deleted: 0,
                waiting: 1
            }
        );
        assert_eq!(
            store.collect_garbage(160, 60).unwrap(),
            Collected {
                deleted: 1,
                waiting: 0
            },
            "{backend}"
        );
        volume.flush().unwrap();
        let mut back = [0u8; 4];
        volume.read(CHUNK, &mut back).unwrap();
        assert_eq!(back, [3; 4]);
        drop(volume);
        // A deleted disk's chunks are garbage.
        store.delete_disk("disk-d").unwrap();
        assert_eq!(
            store.collect_garbage(200, 0).unwrap().deleted,
            2,
            "{backend}"
        );
        assert!(store.list_chunks(None).unwrap().is_empty(), "{backend}");
    }
}

/// Two writers of one disk, on two hosts (two local caches) sharing the object store.
fn two_writers(
    a: &Arc<BlockStore>,
    b: &Arc<BlockStore>,
    same_chunk: bool,
) -> Result<(), BlockError> {
    let first = a.open_volume_for_test("disk-e")?;
    first.write(0, b"first")?;
    first.flush()?;
    let second = b.open_volume_for_test("disk-e")?;
    first.write(0, b"from a")?;
    first.flush()?;
    second.write(if same_chunk { 0 } else { CHUNK }, b"from b")?;
    let refused = second.flush();
    let third = a.open_volume_for_test("disk-e")?;
    let mut back = [0u8; 6];
    third.read(0, &mut back)?;
    assert_eq!(&back, b"from a", "the first writer's data stands");
    third.read(CHUNK, &mut back)?;
    assert_eq!(back, [0; 6], "nothing of the second writer's");
    refused
}

#[test]
fn a_second_writer_fails_loudly_on_an_object_store() {
    // A chunk generation both wrote: the create-only upload refuses the second.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("bucket").display());
    let a = BlockStore::open(&dir.path().join("a"), Some(&url)).unwrap();
    let b = BlockStore::open(&dir.path().join("b"), Some(&url)).unwrap();
    assert!(matches!(
        two_writers(&a, &b, true),
        Err(BlockError::Conflict(_))
    ));
    // A manifest replaced since the second writer read it: the conditional commit refuses.
    let shared = Arc::new(object_store::memory::InMemory::new());
    let a = BlockStore::in_memory(&dir.path().join("c"), shared.clone());
    let b = BlockStore::in_memory(&dir.path().join("d"), shared);
    assert!(matches!(
        two_writers(&a, &b, false),
        Err(BlockError::Conflict(_))
    ));
}

#[test]
fn a_single_block_file_moves_into_chunks() {
    for (backend, dir, store) in stores() {
        // The single-file layout: ciphertext at the disk's own offsets, holes unwritten.
        let size = 3 * CHUNK;
        let mut plain = vec![0u8; size as usize];
        plain[5..9].copy_from_slice(b"head");
        plain[2 * CHUNK as usize..2 * CHUNK as usize + UNIT].fill(9);
        let old = dir.path().join("blocks").join("disk-f.blocks");
        let file = std::fs::File::create(&old).unwrap();
        file.set_len(size).unwrap();
        for unit in [0usize, 2 * CHUNK as usize / UNIT] {
            let mut block = plain[unit * UNIT..(unit + 1) * UNIT].to_vec();
            key().encrypt(unit as u64, &mut block).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, &block, (unit * UNIT) as u64).unwrap();
        }
        let volume = store.open_volume("disk-f", size, vec![key()]).unwrap();
        assert_eq!(read_all(&volume), plain, "{backend}");
        assert_eq!(
            volume.committed().chunks.len(),
            2,
            "{backend}: only chunks with data"
        );
        assert!(!old.exists(), "{backend}: the old file is gone");
    }
}

#[test]
fn holes_cost_nothing_and_allocation_reports_them() {
    for (backend, dir, store) in stores() {
        let size = 1 << 30;
        let volume = store.open_volume("disk-g", size, vec![key()]).unwrap();
        volume.write(512 * MIB, b"hello").unwrap();
        volume.write(3 * MIB, &vec![7u8; MIB as usize]).unwrap();
        volume.flush().unwrap();
        let used: u64 = walk_blocks(&dir.path().join("blocks"));
        assert!(
            used < 3 * MIB,
            "{backend}: a 1 GiB disk with two writes uses {used} bytes"
        );
        assert_eq!(
            volume.allocation(0, 8 * MIB).unwrap(),
            vec![(3 * MIB, true), (MIB, false), (4 * MIB, true)],
            "{backend}"
        );
        assert_eq!(
            volume.allocation(512 * MIB, MIB).unwrap(),
            vec![(UNIT as u64, false), (MIB - UNIT as u64, true)]
        );
        volume.write_zeroes(3 * MIB, MIB).unwrap();
        assert_eq!(
            volume.allocation(0, 8 * MIB).unwrap(),
            vec![(8 * MIB, true)]
        );
        volume
            .write_zeroes(512 * MIB + 100, 2 * UNIT as u64)
            .unwrap();
        let mut hello = [1u8; 5];
        volume.read(512 * MIB, &mut hello).unwrap();
        assert_eq!(
            &hello, b"hello",
            "{backend}: zeroing after the word keeps it"
        );
        assert!(
            volume.allocation(size - 1, 2).is_err(),
            "bounds are checked"
        );
    }
}

fn walk_blocks(dir: &Path) -> u64 {
    let mut used = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        used += if meta.is_dir() {
            walk_blocks(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    used
}

#[test]
fn extents_follow_what_was_written() {
    for (backend, _dir, store) in stores() {
        let unit = UNIT as u64;
        let volume = store.open_volume("disk-h", 4 * MIB, vec![key()]).unwrap();
        volume.write(2 * MIB + 5, b"y").unwrap();
        assert_eq!(
            volume.extents(0, 4 * MIB).unwrap(),
            vec![(2 * MIB, true), (unit, false), (2 * MIB - unit, true)],
            "{backend}"
        );
        assert_eq!(
            volume.extents(MIB + 3, 2 * MIB).unwrap(),
            vec![(MIB - 3, true), (unit, false), (MIB + 3 - unit, true)]
        );
        volume.fill_zeroes(2 * MIB, unit).unwrap();
        assert_eq!(volume.extents(0, 4 * MIB).unwrap(), vec![(4 * MIB, true)]);
        volume.revoke();
        volume.write(0, b"z").unwrap_err();
        assert!(volume.extents(0, 5 * MIB).is_err());
    }
}

#[test]
fn layers_nest_and_withdrawn_keys_refuse_every_access() {
    for (backend, _dir, store) in stores() {
        let data = vec![0x5au8; UNIT];
        let double = store
            .open_volume("disk-i", 4 * UNIT as u64, vec![key_from(1), key_from(2)])
            .unwrap();
        double.write(0, &data).unwrap();
        double.flush().unwrap();
        let chunk = double.committed().chunks[&0].clone();
        let stored = std::fs::read(store.fetch(&chunk.origin, 0, chunk.gen).unwrap()).unwrap();
        let mut once = data.clone();
        key_from(1).encrypt(0, &mut once).unwrap();
        let mut peeled = stored[..UNIT].to_vec();
        key_from(2).decrypt(0, &mut peeled).unwrap();
        assert_eq!(peeled, once, "{backend}: inner layer first, outer last");
        double.revoke();
        assert!(!double.is_available());
        let mut buf = vec![0u8; 10];
        assert!(matches!(
            double.read(0, &mut buf),
            Err(BlockError::KeyUnavailable)
        ));
        assert!(matches!(
            double.write(UNIT as u64, &buf),
            Err(BlockError::KeyUnavailable)
        ));
        assert!(matches!(
            double.write_zeroes(0, 10),
            Err(BlockError::KeyUnavailable)
        ));
        double.restore(vec![key_from(1), key_from(2)]);
        let mut back = vec![0u8; UNIT];
        double.read(0, &mut back).unwrap();
        assert_eq!(back, data);
    }
}

#[test]
fn writing_in_place_stores_what_writing_stores() {
    let (_, _dir, store) = stores().remove(0);
    let size = 8 * UNIT as u64;
    let (a, b) = (
        store.open_volume("disk-j", size, vec![key()]).unwrap(),
        store.open_volume("disk-k", size, vec![key()]).unwrap(),
    );
    for (offset, len) in [
        (0, 2 * UNIT),
        (3 * UNIT as u64, UNIT),
        (UNIT as u64 + 9, 100),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        a.write(offset, &data).unwrap();
        b.write_in_place(offset, &mut data.clone()).unwrap();
    }
    assert_eq!(read_all(&a), read_all(&b));
    assert_eq!(a.extents(0, size).unwrap(), b.extents(0, size).unwrap());
}

#[test]
fn bad_sizes_and_ranges_are_refused() {
    let (_, _dir, store) = stores().remove(0);
    assert!(matches!(
        store.open_volume("disk-l", 1000, vec![key()]),
        Err(BlockError::BadSize(1000))
    ));
    assert!(store.open_volume("../escape", CHUNK, vec![key()]).is_err());
    let volume = store
        .open_volume("disk-l", UNIT as u64, vec![key()])
        .unwrap();
    let mut buf = [0u8; 2];
    assert!(matches!(
        volume.read(UNIT as u64 - 1, &mut buf),
        Err(BlockError::OutOfRange { .. })
    ));
    assert!(matches!(
        volume.write(u64::MAX, &buf),
        Err(BlockError::OutOfRange { .. })
    ));
    assert!(matches!(
        volume.write_zeroes(0, UNIT as u64 + 1),
        Err(BlockError::OutOfRange { .. })
    ));
    drop(volume);
    // A disk grows; it never shrinks under its data.
    let grown = store
        .open_volume("disk-l", 2 * UNIT as u64, vec![key()])
        .unwrap();
    grown.write(UNIT as u64, b"end").unwrap();
    grown.flush().unwrap();
    drop(grown);
    assert!(matches!(
        store.open_volume("disk-l", UNIT as u64, vec![key()]),
        Err(BlockError::BadSize(_))
    ));
}

impl BlockStore {
    fn open_volume_for_test(self: &Arc<Self>, disk: &str) -> Result<Volume, BlockError> {
        self.open_volume(disk, 2 * CHUNK, vec![key()])
    }
}

#[test]
fn a_copied_manifest_keeps_its_data_while_the_source_moves_on() {
    for (backend, _dir, store) in stores() {
        let disk = store.open_volume("disk-m", 2 * CHUNK, vec![key()]).unwrap();
        disk.write(100, b"before").unwrap();
        disk.freeze().unwrap();
        store.copy_manifest("disk-m", "snap-m", 2 * CHUNK).unwrap();
        disk.write(100, b"after!").unwrap();
        disk.write_zeroes(0, CHUNK).unwrap();
        disk.flush().unwrap();
        assert_eq!(
            store.collect_garbage(0, 0).unwrap().deleted,
            0,
            "{backend}: the copy keeps its chunk"
        );
        let copy = store.open_volume("snap-m", 3 * CHUNK, vec![key()]).unwrap();
        let mut back = [0u8; 6];
        copy.read(100, &mut back).unwrap();
        assert_eq!(&back, b"before", "{backend}");
        disk.read(100, &mut back).unwrap();
        assert_eq!(back, [0; 6]);
        // A copy of a disk that was never written reads as zeros.
        store
            .copy_manifest("never-written", "snap-n", CHUNK)
            .unwrap();
        assert!(store
            .load_manifest("snap-n")
            .unwrap()
            .unwrap()
            .0
            .chunks
            .is_empty());
        assert!(
            store.copy_manifest("disk-m", "snap-m", CHUNK).is_err(),
            "{backend}: never replaced"
        );
    }
}

#[test]
fn changes_between_copies_are_found_without_keys() {
    let (_, _dir, store) = stores().remove(0);
    let unit = UNIT as u64;
    let disk = store.open_volume("disk-p", 3 * CHUNK, vec![key()]).unwrap();
    disk.write(0, &[1u8; 3 * UNIT]).unwrap();
    disk.write(2 * CHUNK, &[2u8; UNIT]).unwrap();
    disk.freeze().unwrap();
    store.copy_manifest("disk-p", "snap-p1", 3 * CHUNK).unwrap();
    disk.write(unit, &[9u8; 10]).unwrap(); // changes unit 1
    disk.write_zeroes(2 * unit, unit).unwrap(); // clears unit 2
    disk.write(CHUNK + 5 * unit, &[3u8; UNIT]).unwrap(); // a new chunk
    disk.write(2 * CHUNK, &[2u8; UNIT]).unwrap(); // rewritten with the same bytes
    disk.freeze().unwrap();
    store.copy_manifest("disk-p", "snap-p2", 3 * CHUNK).unwrap();
    let first = store.open_volume("snap-p1", 3 * CHUNK, vec![]).unwrap();
    let second = store.open_volume("snap-p2", 3 * CHUNK, vec![]).unwrap();
    assert_eq!(
        second.changes_since(&first).unwrap(),
        vec![
            Change {
                first: unit,
                last: 2 * unit - 1,
                cleared: false
            },
            Change {
                first: 2 * unit,
                last: 3 * unit - 1,
                cleared: true
            },
            Change {
                first: CHUNK + 5 * unit,
                last: CHUNK + 6 * unit - 1,
                cleared: false
            },
        ]
    );
    assert_eq!(first.changes_since(&first).unwrap(), vec![]);
    // Backwards, what the later copy wrote reads as cleared in the earlier one.
    assert_eq!(
        first.changes_since(&second).unwrap(),
        vec![
            Change {
                first: unit,
                last: 3 * unit - 1,
                cleared: false
            },
            Change {
                first: CHUNK + 5 * unit,
                last: CHUNK + 6 * unit - 1,
                cleared: true
            },
        ]
    );
}

/// A writer alternates between two volumes, each write of a counter to the second only
/// after the same count reached the first; cuts taken meanwhile never show the second
/// ahead of the first, and later writes never reach a cut.
#[test]
fn cuts_across_volumes_are_consistent() {
    for (name, _dir, store) in stores() {
        let ids = [
            "00000000-0000-4000-8000-00000000000a",
            "00000000-0000-4000-8000-00000000000b",
        ];
        let volumes: Vec<Arc<Volume>> = ids
            .iter()
            .map(|id| Arc::new(store.open_volume(id, 4 * MIB, vec![key()]).unwrap()))
            .collect();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (volumes, done) = (volumes.clone(), done.clone());
            std::thread::spawn(move || {
                let mut count = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    count += 1;
                    for v in &volumes {
                        v.write((count % 4) * MIB, &count.to_le_bytes()).unwrap();
                        v.write(0, &count.to_le_bytes()).unwrap();
                    }
                }
            })
        };
        for cut in 0..20 {
            let copies = [
                format!("00000000-0000-4000-8000-0000000001{cut:02}"),
                format!("00000000-0000-4000-8000-0000000002{cut:02}"),
            ];
            let refs: Vec<&Volume> = volumes.iter().map(|v| v.as_ref()).collect();
            crate::freeze_together(&refs, || {
                for (id, copy) in ids.iter().zip(&copies) {
                    store.copy_manifest(id, copy, 4 * MIB)?;
                }
                Ok(())
            })
            .unwrap();
            let counts: Vec<u64> = copies
                .iter()
                .map(|copy| {
                    let v = store.open_volume(copy, 4 * MIB, vec![key()]).unwrap();
                    let mut word = [0u8; 8];
                    v.read(0, &mut word).unwrap();
                    u64::from_le_bytes(word)
                })
                .collect();
            assert!(
                counts[1] <= counts[0] && counts[0] <= counts[1] + 1,
                "{name}: cut {cut} shows {counts:?}"
            );
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
    }
}
