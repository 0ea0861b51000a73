//! Interoperability with the tools users have: volumes `cryptsetup luksFormat` makes open
//! here and read back what was written under the key cryptsetup reports; volumes made here
//! pass `cryptsetup luksDump` and `open --test-passphrase`, and cryptsetup derives the
//! same volume key; qemu's `luks` driver reads and writes LUKS1 volumes made either way.

use std::path::Path;
use std::process::{Command, Output};

use atrest_luks::{
    Argon2Kind, DataCipher, FormatOptions, Hash, Header, Kdf, Version, HEADER_AREA, KEY_LEN, SECTOR,
};
use zeroize::Zeroizing;

const VOLUME: u64 = 20 << 20;
/// What Azure Disk Encryption uses: the base64 text of 127 random bytes, as a key file.
const PASSPHRASE: &[u8] = b"UmVhbGx5IGEgcGFzc3BocmFzZSBvZiAxMjcgcmFuZG9tIGJ5dGVzLCBlbmNvZGVkIGluIGJhc2U2NCwgYXMgdGhlIGV4dGVuc2lvbiBkb2VzIGl0IGZvciBldmVyeSB2b2x1bWUgaXQgZW5jcnlwdHMuLi4uLi4uLi4uLi4uLi4uLi4uLg==";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/setup installs it): {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The volume key cryptsetup derives from the key file (`MK dump:` of `--dump-volume-key`).
fn cryptsetup_volume_key(volume: &Path, key_file: &Path) -> Zeroizing<[u8; KEY_LEN]> {
    let dump = ok(
        "cryptsetup",
        &[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            path(key_file),
            path(volume),
        ],
    );
    let hex: String = dump
        .split("MK dump:")
        .nth(1)
        .expect("an MK dump")
        .split_whitespace()
        .take(KEY_LEN)
        .collect();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    key
}

/// Encrypts `data` as dm-crypt would at `offset` of the data segment: plain64 IVs count
/// 512-byte sectors whatever the sector size. Written from the cryptsetup-reported key,
/// independently of the crate's own cipher.
fn dm_crypt(
    key: &Zeroizing<[u8; KEY_LEN]>,
    sector: usize,
    offset: u64,
    data: &mut [u8],
    encrypt: bool,
) {
    let mut xts = atrest_xts::XtsKey::new(key).unwrap();
    for (i, unit) in data.chunks_mut(sector).enumerate() {
        let iv = (offset + (i * sector) as u64) / SECTOR;
        if encrypt {
            xts.encrypt(iv, unit).unwrap();
        } else {
            xts.decrypt(iv, unit).unwrap();
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

fn read_area(volume: &Path) -> Vec<u8> {
    let bytes = std::fs::read(volume).unwrap();
    bytes[..HEADER_AREA.min(bytes.len() as u64) as usize].to_vec()
}

#[test]
fn cryptsetup_volumes_open_here() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, PASSPHRASE).unwrap();
    let cases: [&[&str]; 5] = [
        &[
            "--type",
            "luks1",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
        ],
        &[
            "--type",
            "luks1",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--hash",
            "sha1",
        ],
        &[
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--hash",
            "sha512",
        ],
        &[
            "--type",
            "luks2",
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "1024",
            "--pbkdf-force-iterations",
            "4",
        ],
        &[
            "--type",
            "luks2",
            "--pbkdf",
            "argon2i",
            "--pbkdf-memory",
            "1024",
            "--pbkdf-force-iterations",
            "4",
            "--sector-size",
            "4096",
        ],
    ];
    for case in cases {
        let volume = dir.path().join("volume");
        let _ = std::fs::remove_file(&volume);
        std::fs::File::create(&volume)
            .unwrap()
            .set_len(VOLUME)
            .unwrap();
        let mut args = vec!["luksFormat", "--batch-mode", "--key-file", path(&key_file)];
        args.extend_from_slice(case);
        args.push(path(&volume));
        ok("cryptsetup", &args);
        let key = cryptsetup_volume_key(&volume, &key_file);

        let area = read_area(&volume);
        let header = Header::parse(&area).unwrap();
        let dump = ok("cryptsetup", &["luksDump", path(&volume)]);
        assert!(dump.contains(&header.uuid), "{case:?}: {dump}");
        // cryptsetup picks 4096-byte sectors for LUKS2 on a file unless told otherwise.
        let sector = match dump.split("sector: ").nth(1) {
            Some(rest) => rest.split_whitespace().next().unwrap().parse().unwrap(),
            None => 512,
        };
        assert_eq!(header.sector_size, sector, "{case:?}");

        // Data written under the key cryptsetup reports reads back through this crate.
        let plain = pattern(64 << 10);
        let mut data = plain.clone();
        dm_crypt(&key, sector as usize, 8192, &mut data, true);
        let mut bytes = std::fs::read(&volume).unwrap();
        let at = (header.data_offset + 8192) as usize;
        bytes[at..at + data.len()].copy_from_slice(&data);

        let opened = header.unlock(&area, PASSPHRASE).unwrap();
        let mut cipher = DataCipher::new(&header, &opened).unwrap();
        let mut read = bytes[at..at + data.len()].to_vec();
        cipher.decrypt(8192, &mut read).unwrap();
        assert!(read == plain, "{case:?}: the pattern does not read back");
        assert!(header.unlock(&area, b"not the passphrase").is_err());
    }
}

#[test]
fn volumes_made_here_open_in_cryptsetup() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, PASSPHRASE).unwrap();
    let wrong_key = dir.path().join("wrong");
    std::fs::write(&wrong_key, b"wrong").unwrap();
    let argon2 = Kdf::Argon2 {
        kind: Argon2Kind::Argon2id,
        time: 4,
        memory_kib: 1024,
        lanes: 2,
    };
    let pbkdf2 = Kdf::Pbkdf2 {
        hash: Hash::Sha256,
        iterations: 1000,
    };
    for (version, kdf, sector_size) in [
        (Version::Luks1, pbkdf2, 512),
        (Version::Luks2, pbkdf2, 512),
        (Version::Luks2, argon2, 512),
        (Version::Luks2, argon2, 4096),
    ] {
        let formatted = atrest_luks::format(
            &FormatOptions {
                version,
                kdf,
                sector_size,
            },
            PASSPHRASE,
        )
        .unwrap();
        let plain = pattern(64 << 10);
        let mut data = plain.clone();
        DataCipher::new(&formatted.header, &formatted.key)
            .unwrap()
            .encrypt(4096, &mut data)
            .unwrap();
        let mut bytes = formatted.area.clone();
        bytes.resize(VOLUME as usize, 0);
        let at = (formatted.header.data_offset + 4096) as usize;
        bytes[at..at + data.len()].copy_from_slice(&data);
        let volume = dir.path().join("volume");
        std::fs::write(&volume, &bytes).unwrap();

        let dump = ok("cryptsetup", &["luksDump", path(&volume)]);
        let case = format!("{version:?} {} {sector_size}", kdf.name());
        assert!(dump.contains(&formatted.header.uuid), "{case}: {dump}");
        assert!(dump.contains("xts-plain64"), "{case}: {dump}");
        if version == Version::Luks2 {
            assert!(
                dump.contains(&format!("sector: {sector_size} [bytes]")),
                "{case}: {dump}"
            );
            assert!(
                dump.contains(&format!("PBKDF:      {}", kdf.name())),
                "{case}: {dump}"
            );
        }
        ok(
            "cryptsetup",
            &[
                "open",
                "--test-passphrase",
                "--key-file",
                path(&key_file),
                path(&volume),
            ],
        );
        let refused = run(
            "cryptsetup",
            &[
                "open",
                "--test-passphrase",
                "--key-file",
                path(&wrong_key),
                path(&volume),
            ],
        );
        assert!(
            !refused.status.success(),
            "{case}: a wrong passphrase opened the volume"
        );

        let key = cryptsetup_volume_key(&volume, &key_file);
        let mut read = data.clone();
        dm_crypt(&key, sector_size as usize, 4096, &mut read, false);
        assert!(
            read == plain,
            "{case}: cryptsetup's volume key does not decrypt the data"
        );
    }
}

fn qemu_luks(volume: &Path, key_file: &Path, command: &str) -> Output {
    let image = format!("driver=luks,key-secret=sec0,file.filename={}", path(volume));
    run(
        "qemu-io",
        &[
            "--object",
            &format!("secret,id=sec0,file={}", path(key_file)),
            "--image-opts",
            &image,
            "-c",
            command,
        ],
    )
}

#[test]
fn qemu_reads_and_writes_luks1_either_way() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, PASSPHRASE).unwrap();

    // Made here, written by qemu, read here.
    let options = FormatOptions {
        version: Version::Luks1,
        kdf: Kdf::Pbkdf2 {
            hash: Hash::Sha256,
            iterations: 1000,
        },
        sector_size: 512,
    };
    let formatted = atrest_luks::format(&options, PASSPHRASE).unwrap();
    let mut bytes = formatted.area.clone();
    bytes.resize(VOLUME as usize, 0);
    let volume = dir.path().join("ours.img");
    std::fs::write(&volume, &bytes).unwrap();
    let out = qemu_luks(&volume, &key_file, "write -P 0x5a 65536 131072");
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("error"),
        "{out:?}"
    );
    let bytes = std::fs::read(&volume).unwrap();
    let at = (formatted.header.data_offset + 65536) as usize;
    let mut read = bytes[at..at + 131072].to_vec();
    assert!(read.iter().any(|&b| b != 0x5a), "qemu wrote plaintext");
    DataCipher::new(&formatted.header, &formatted.key)
        .unwrap()
        .decrypt(65536, &mut read)
        .unwrap();
    assert!(read.iter().all(|&b| b == 0x5a));

    // Made by qemu-img, written here, read by qemu.
    let theirs = dir.path().join("theirs.img");
    ok(
        "qemu-img",
        &[
            "create",
            "-f",
            "luks",
            "--object",
            &format!("secret,id=sec0,file={}", path(&key_file)),
            "-o",
            "key-secret=sec0,iter-time=10",
            path(&theirs),
            "16M",
        ],
    );
    let mut bytes = std::fs::read(&theirs).unwrap();
    let header = Header::parse(&bytes).unwrap();
    assert_eq!(header.version, Version::Luks1);
    let key = header.unlock(&bytes, PASSPHRASE).unwrap();
    let mut data = vec![0xa5u8; 4096];
    DataCipher::new(&header, &key)
        .unwrap()
        .encrypt(1 << 20, &mut data)
        .unwrap();
    let at = (header.data_offset + (1 << 20)) as usize;
    bytes[at..at + 4096].copy_from_slice(&data);
    std::fs::write(&theirs, &bytes).unwrap();
    let out = qemu_luks(&theirs, &key_file, "read -P 0xa5 1048576 4096");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.contains("Pattern verification failed"),
        "{stdout}"
    );
}
