"""Independent views of cores and images: what eu-readelf and GNU readelf
decode from a core, and pycriu's decoding of an image (not the package's).
"""
import subprocess
import re

from pycriu import images

# eu-readelf's names of x86_64 general registers -> CRIU's user_x86_regs
EU_GREGS = {"rbp": "bp", "rbx": "bx", "rax": "ax", "rcx": "cx", "rdx": "dx",
            "rsi": "si", "rdi": "di", "orig_rax": "orig_ax", "rip": "ip",
            "rflags": "flags", "rsp": "sp", "fs.base": "fs_base", "gs.base": "gs_base"}
for _r in ("r8 r9 r10 r11 r12 r13 r14 r15 cs ss ds es fs gs").split():
    EU_GREGS[_r] = _r


def eu_readelf_notes(core):
    """Per-thread registers and flags as eu-readelf decodes them."""
    out = subprocess.run(["eu-readelf", "-n", core], check=True, capture_output=True,
                         text=True).stdout
    threads, psinfo, current = [], {}, None
    for line in out.splitlines():
        header = re.match(r"\s+(CORE|LINUX)\s+\d+\s+(\S+)", line)
        if header:
            current = header.group(2)
            if current == "PRSTATUS":
                threads.append({"regs": {}, "xmm": {}})
            continue
        if current == "PRSTATUS":
            for key, val in re.findall(r"([a-z_.0-9]+):\s+(<[0-9,]*>|-?0x[0-9a-f]+|-?\d+)",
                                       line):
                threads[-1]["regs"][key] = val
        elif current == "FPREGSET":
            for key, val in re.findall(r"(xmm\d+|mxcsr|fcw|fsw):\s+(0x[0-9a-f]+)", line):
                threads[-1]["xmm"][key] = int(val, 16)
        elif current == "PRPSINFO":
            for key, val in re.findall(r"([a-z]+):\s+([^\s,]+)", line):
                psinfo.setdefault(key, val)
    return threads, psinfo


def to_u64(text):
    return int(text, 0) & 0xFFFFFFFFFFFFFFFF


def sigset(text):
    """eu-readelf's '<10,12>' as a mask."""
    return sum(1 << (int(s) - 1) for s in text.strip("<>").split(",") if s)


def readelf_loads(core):
    """(vaddr, filesz, memsz) of every PT_LOAD, from GNU readelf."""
    out = subprocess.run(["readelf", "-lW", core], check=True, capture_output=True,
                         text=True).stdout
    loads = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "LOAD":
            loads.append((int(parts[2], 16), int(parts[4], 16), int(parts[5], 16)))
    return loads


def load_image(path):
    with open(path, "rb") as f:
        return images.load(f)["entries"]


def load_thread(images_dir, tid):
    """(core entry, Thread) of core-<tid>.img as the loader reads one thread
    (images._load_thread, through the ImageDir seam): what the register
    round trips compare word for word."""
    from criu_coredump import images as loader
    from criu_coredump.imagedir import ImageDir
    return loader._load_thread(ImageDir(images_dir), tid)
