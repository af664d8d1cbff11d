#!/usr/bin/env python3
"""Syscalls Node has no binding for, for the cluster tests: fallocate(2),
lseek(2) SEEK_DATA/SEEK_HOLE, O_TMPFILE with linkat(2), file handles; and a
model driver for holes.

  falloc PATH MODE OFFSET LENGTH   prints "ok" or the errno name
  seek PATH WHENCE OFFSET          WHENCE data|hole; prints the offset or the errno name
  tmpfile DIR NAME SIZE HOW        O_TMPFILE in DIR, SIZE bytes written, then named NAME by
                                   linkat(fd, "", AT_EMPTY_PATH) (HOW=empty), through
                                   /proc/self/fd (HOW=proc), O_EXCL then linkat (HOW=excl:
                                   prints the errno), never (HOW=none); HOW=hold: prints
                                   "open" and keeps it open until killed
  handle PATH                      name_to_handle_at: prints the handle as hex
  openh DIR HEX                    open_by_handle_at(DIR's mount, handle): prints what a
                                   file reads (hex of the first 64 bytes) or, for a
                                   directory, its entries, or the errno name
  copy SRC DST OFFIN OFFOUT LEN     copy_file_range until LEN bytes or the source's end;
                                   prints the bytes copied and the calls made
  model SEED OPS REMOTE LOCAL      random write/truncate/fallocate/punch/zero/seek on
                                   REMOTE (the mount) and LOCAL (ext4), compared after
                                   every op; prints one JSON line, exits 1 on a mismatch
"""
import ctypes
import errno
import json
import os
import random
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
libc.fallocate.restype = ctypes.c_int

KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 0x01, 0x02, 0x10
MiB = 1024 * 1024


def fallocate(fd, mode, offset, length):
    if libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def seek(fd, offset, whence):
    try:
        return os.lseek(fd, offset, whence)
    except OSError as e:
        return -e.errno


def errname(n):
    # errno 95 has two names; the kernel's headers call it EOPNOTSUPP
    return "EOPNOTSUPP" if n == errno.EOPNOTSUPP else errno.errorcode[n]


def cmd_falloc(path, mode, offset, length):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fallocate(fd, int(mode, 0), int(offset), int(length))
        print("ok")
    except OSError as e:
        print(errname(e.errno))
    finally:
        os.close(fd)


def cmd_seek(path, whence, offset):
    fd = os.open(path, os.O_RDONLY)
    try:
        r = seek(fd, int(offset), os.SEEK_DATA if whence == "data" else os.SEEK_HOLE)
        print(r if r >= 0 else errname(-r))
    finally:
        os.close(fd)


def read_all(fd, size):
    out = bytearray()
    while len(out) < size:
        b = os.pread(fd, min(4 * MiB, size - len(out)), len(out))
        if not b:
            break
        out += b
    return bytes(out)


class Mismatch(Exception):
    pass


def model(seed, ops, remote_path, local_path):
    rnd = random.Random(seed)
    max_size = 8 * MiB
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
    r = os.open(remote_path, flags, 0o644)
    l = os.open(local_path, flags, 0o644)
    log = []
    seeks = 0

    def check(what):
        nonlocal seeks
        rs, ls = os.fstat(r).st_size, os.fstat(l).st_size
        if rs != ls:
            raise Mismatch(f"{what}: size {rs} on the mount, {ls} on ext4")
        local = read_all(l, ls)
        remote = read_all(r, rs)
        if local != remote:
            at = next(i for i in range(len(local)) if local[i] != remote[i])
            raise Mismatch(f"{what}: content differs first at byte {at}")
        # SEEK_DATA never skips data; SEEK_HOLE lands on a zero byte, never past the size.
        for o in [0, rnd.randrange(0, max(1, ls + MiB)), rnd.randrange(0, max(1, ls + 1))]:
            seeks += 2
            d = seek(r, o, os.SEEK_DATA)
            h = seek(r, o, os.SEEK_HOLE)
            if o >= ls:
                if d != -errno.ENXIO or h != -errno.ENXIO:
                    raise Mismatch(f"{what}: seek at {o} >= size {ls} gave data {d} hole {h}, not ENXIO")
                continue
            if d == -errno.ENXIO:
                if any(local[o:]):
                    raise Mismatch(f"{what}: SEEK_DATA({o}) is ENXIO but data follows")
            elif d < o or d >= ls or any(local[o:d]):
                raise Mismatch(f"{what}: SEEK_DATA({o}) = {d} skips data or leaves the file (size {ls})")
            if h < o or h > ls or (h < ls and local[h] != 0):
                raise Mismatch(f"{what}: SEEK_HOLE({o}) = {h} is not a hole (size {ls})")
        # st_blocks counts at least every 4 KiB page that holds data.
        pages = sum(1 for p in range(0, ls, 4096) if any(local[p : p + 4096]))
        blocks = os.fstat(r).st_blocks
        if blocks * 512 < pages * 4096:
            raise Mismatch(f"{what}: st_blocks {blocks} below the {pages} pages holding data")

    try:
        check("empty")
        for i in range(ops):
            kind = rnd.choice(["write", "write", "truncate", "alloc", "keep", "punch", "zero", "zerokeep", "reopen"])
            size = os.fstat(l).st_size
            off = rnd.randrange(0, max_size)
            if rnd.random() < 0.3:
                off = rnd.randrange(0, 8) * MiB + rnd.choice([0, -1, 1, 4096]) % MiB  # block edges
            length = rnd.choice([1, 100, 4096, rnd.randrange(1, 3 * MiB), MiB, 2 * MiB])
            if kind == "write":
                data = rnd.randbytes(length) if rnd.random() < 0.7 else bytes([rnd.randrange(1, 256)]) * length
                os.pwrite(r, data, off)
                os.pwrite(l, data, off)
                what = f"op {i} write {off}+{length}"
            elif kind == "truncate":
                new = rnd.choice([0, rnd.randrange(0, max_size), size // 2, size + 100])
                os.ftruncate(r, new)
                os.ftruncate(l, new)
                what = f"op {i} truncate {new}"
            elif kind == "reopen":
                os.fsync(r)
                os.close(r)
                r = os.open(remote_path, os.O_RDWR)
                what = f"op {i} reopen"
            else:
                mode = {"alloc": 0, "keep": KEEP_SIZE, "punch": PUNCH_HOLE | KEEP_SIZE, "zero": ZERO_RANGE, "zerokeep": ZERO_RANGE | KEEP_SIZE}[kind]
                fallocate(l, mode, off, length)
                fallocate(r, mode, off, length)
                what = f"op {i} fallocate mode {mode} {off}+{length}"
            log.append(what)
            check(what)
        os.fsync(r)
        os.close(r)
        r = os.open(remote_path, os.O_RDWR)
        check("final, reopened")
    except Mismatch as e:
        print(json.dumps({"seed": seed, "ok": False, "error": str(e), "ops": log[-8:]}))
        return 1
    finally:
        os.close(r)
        os.close(l)
    print(json.dumps({"seed": seed, "ok": True, "ops": len(log), "seeks": seeks}))
    return 0


def cmd_tmpfile(directory, name, size, how):
    flags = os.O_TMPFILE | os.O_RDWR | (os.O_EXCL if how == "excl" else 0)
    fd = os.open(directory, flags, 0o640)
    data = bytes((i * 7 + 3) % 251 for i in range(int(size)))
    os.pwrite(fd, data, 0)
    target = os.path.join(directory, name)
    AT_FDCWD, AT_EMPTY_PATH, AT_SYMLINK_FOLLOW = -100, 0x1000, 0x400
    libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    if how in ("empty", "excl"):
        if libc.linkat(fd, b"", AT_FDCWD, target.encode(), AT_EMPTY_PATH) != 0:
            print(errname(ctypes.get_errno()))
            return
    elif how == "proc":
        # os.link() would call link(2), which does not follow the /proc magic link
        if libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, target.encode(), AT_SYMLINK_FOLLOW) != 0:
            print(errname(ctypes.get_errno()))
            return
    elif how == "hold":
        print("open", flush=True)
        while True:
            os.pread(fd, 1, 0)
            import time
            time.sleep(0.2)
    st = os.fstat(fd)
    os.close(fd)
    print(json.dumps({"nlink": st.st_nlink, "size": st.st_size}))


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]


def cmd_handle(path):
    fh = FileHandle()
    fh.handle_bytes = 128
    mount_id = ctypes.c_int()
    libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(FileHandle), ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    if libc.name_to_handle_at(-100, path.encode(), ctypes.byref(fh), ctypes.byref(mount_id), 0) != 0:
        print(errname(ctypes.get_errno()))
        return
    raw = bytes(fh.f_handle[: fh.handle_bytes])
    print(f"{fh.handle_type}:{raw.hex()}")


def cmd_openh(directory, text):
    kind, raw = text.split(":")
    raw = bytes.fromhex(raw)
    fh = FileHandle()
    fh.handle_bytes = len(raw)
    fh.handle_type = int(kind)
    ctypes.memmove(fh.f_handle, raw, len(raw))
    mfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.POINTER(FileHandle), ctypes.c_int]
    fd = libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_RDONLY)
    if fd < 0:
        print(errname(ctypes.get_errno()))
        return
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        print(" ".join(sorted(os.listdir(fd))))
    else:
        print(os.pread(fd, 64, 0).hex())
    os.close(fd)
    os.close(mfd)


def cmd_copy(src, dst, off_in, off_out, length):
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
    off_in, off_out, left = int(off_in), int(off_out), int(length)
    done = calls = 0
    try:
        while left > 0:
            n = os.copy_file_range(fi, fo, left, off_in + done, off_out + done)
            calls += 1
            if n == 0:
                break
            done += n
            left -= n
    except OSError as e:
        print(errname(e.errno))
        return
    finally:
        os.close(fi)
        os.close(fo)
    print(json.dumps({"copied": done, "calls": calls}))


def main(argv):
    if argv[0] == "falloc":
        cmd_falloc(*argv[1:5])
    elif argv[0] == "seek":
        cmd_seek(*argv[1:4])
    elif argv[0] == "tmpfile":
        cmd_tmpfile(*argv[1:5])
    elif argv[0] == "handle":
        cmd_handle(argv[1])
    elif argv[0] == "openh":
        cmd_openh(argv[1], argv[2])
    elif argv[0] == "copy":
        cmd_copy(*argv[1:6])
    elif argv[0] == "model":
        return model(int(argv[1]), int(argv[2]), argv[3], argv[4])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
