//! The footer against qemu's `vpc` driver, the reader the users run: a fixed VHD
//! written with [`Footer::encode`] is taken at its exact size and reads back its data, and
//! a fixed VHD qemu writes parses.

use std::process::Command;

use atrest_vhd::{Footer, FOOTER_LEN};

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img runs (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn qemu_reads_our_footer_at_the_exact_size() {
    let dir = tempfile::tempdir().unwrap();
    // A size whose CHS geometry cannot express it exactly.
    let size: u64 = 10 * (1 << 20) + 3 * 512;
    let mut data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    data.extend_from_slice(&Footer::fixed(size, 1_800_000_000, [9; 16]).encode());
    let vhd = dir.path().join("disk.vhd");
    std::fs::write(&vhd, &data).unwrap();
    let info = qemu_img(&["info", "--output=json", "-f", "vpc", vhd.to_str().unwrap()]);
    assert!(
        info.contains(&format!("\"virtual-size\": {size}")),
        "{info}"
    );
    let raw = dir.path().join("disk.raw");
    qemu_img(&[
        "convert",
        "-f",
        "vpc",
        "-O",
        "raw",
        vhd.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&raw).unwrap(), data[..size as usize]);
}

#[test]
fn a_fixed_vhd_from_qemu_parses() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![0x5a; 3 << 20]).unwrap();
    let vhd = dir.path().join("disk.vhd");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed,force_size",
        raw.to_str().unwrap(),
        vhd.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&vhd).unwrap();
    let footer = Footer::parse(&bytes[bytes.len() - FOOTER_LEN..]).unwrap();
    assert_eq!(footer.current_size, 3 << 20);
    assert_eq!(bytes.len() as u64, footer.current_size + FOOTER_LEN as u64);
}
