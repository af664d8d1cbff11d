#!/usr/bin/env python3
"""fcntl and OFD locks for the lock cluster test (python's fcntl module, no compiler).

  lock-tool.py try PATH r|w START LEN [ofd]       F_SETLK once: prints ok or EAGAIN
  lock-tool.py getlk PATH r|w START LEN [ofd]     prints "unlck" or "<r|w> <start> <len> <pid>"
  lock-tool.py hold PATH r|w START LEN [wait] [ofd]
      takes the lock (F_SETLKW with "wait", after printing "waiting <monotonic s>"),
      prints "locked <monotonic s>", then reads
      commands from stdin, one per line:
        unlock          prints "unlocking <monotonic s>", unlocks, prints "unlocked <monotonic s>"
        lock r|w S L    F_SETLKW, prints "locked <monotonic s>" or "error <errno name>"
      and exits at EOF (the kernel releases what is left at close).
  lock-tool.py bench PATH N                       N uncontended F_SETLK w + F_UNLCK: prints the mean us of each
"""
import errno
import fcntl
import os
import struct
import sys
import time

F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
TYPES = {"r": fcntl.F_RDLCK, "w": fcntl.F_WRLCK, "u": fcntl.F_UNLCK}
NAMES = {fcntl.F_RDLCK: "r", fcntl.F_WRLCK: "w", fcntl.F_UNLCK: "unlck"}
# struct flock on x86_64: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
FLOCK = "hhqqi4x"


def flock_struct(t, start, length):
    return struct.pack(FLOCK, TYPES[t], os.SEEK_SET, start, length, 0)


def lk(fd, cmd, t, start, length):
    return struct.unpack(FLOCK, fcntl.fcntl(fd, cmd, flock_struct(t, start, length)))


def cmds(ofd):
    return (F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW) if ofd else (fcntl.F_GETLK, fcntl.F_SETLK, fcntl.F_SETLKW)


def out(*a):
    print(*a, flush=True)


def main():
    op, path = sys.argv[1], sys.argv[2]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    if op == "bench":
        n = int(sys.argv[3])
        acquire = release = 0.0
        for _ in range(n):
            t0 = time.monotonic()
            lk(fd, fcntl.F_SETLK, "w", 0, 1)
            t1 = time.monotonic()
            lk(fd, fcntl.F_SETLK, "u", 0, 1)
            acquire += t1 - t0
            release += time.monotonic() - t1
        out(f"{acquire / n * 1e6:.0f} {release / n * 1e6:.0f}")
        return
    t, start, length = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    rest = sys.argv[6:]
    get, set_, setw = cmds("ofd" in rest)
    if op == "try":
        try:
            lk(fd, set_, t, start, length)
            out("ok")
        except OSError as e:
            out(errno.errorcode[e.errno])
        return
    if op == "getlk":
        ty, _wh, s, ln, pid = lk(fd, get, t, start, length)
        out("unlck" if ty == fcntl.F_UNLCK else f"{NAMES[ty]} {s} {ln} {pid}")
        return
    if op == "hold":
        try:
            if "wait" in rest:
                out("waiting", time.monotonic())
            lk(fd, setw if "wait" in rest else set_, t, start, length)
        except OSError as e:
            out("error", errno.errorcode[e.errno])
            return
        out("locked", time.monotonic())
        for line in sys.stdin:
            w = line.split()
            if not w:
                continue
            if w[0] == "unlock":
                out("unlocking", time.monotonic())
                lk(fd, set_, "u", 0, 0)
                out("unlocked", time.monotonic())
            elif w[0] == "lock":
                try:
                    lk(fd, setw, w[1], int(w[2]), int(w[3]))
                    out("locked", time.monotonic())
                except OSError as e:
                    out("error", errno.errorcode[e.errno])
        return
    raise SystemExit(f"unknown op {op}")


main()
