//! BPF_PROG_TEST_RUN: run a loaded program on a crafted packet.

// A raw bpf(2) call: aya 0.13 does not wrap BPF_PROG_TEST_RUN. The attribute
// struct below is the kernel's `test` member of `union bpf_attr`.
#![allow(unsafe_code)]

use std::io;

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Runs the program `fd` on `packet` (an Ethernet frame) with `skb->mark`
/// set to `mark`. Returns (return value, average duration in ns).
pub fn run(fd: i32, packet: &[u8], mark: u32, repeat: u32) -> io::Result<(u32, u32)> {
    if packet.len() < 14 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a test packet is at least an Ethernet header",
        ));
    }
    // The start of `struct __sk_buff`: len, pkt_type, mark. The kernel
    // accepts a prefix of the context and rejects non-zero fields it does
    // not allow; `mark` is allowed.
    let ctx: [u32; 3] = [0, 0, mark];
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat: repeat.max(1),
        ctx_size_in: std::mem::size_of_val(&ctx) as u32,
        ctx_in: ctx.as_ptr() as u64,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` points at valid input buffers (`packet`, `ctx`) that
    // outlive the call; output buffers are null with zero sizes, so the
    // kernel writes only into `attr` itself, whose size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((attr.retval, attr.duration))
}
