"""What the tests share (no test module imports another):

paths       where the repository, the fixtures and the command are; private
            fixture copies with their root's symlinks restored
tools       need(), run_coredump() and convert(), the one gdb() runner,
            gdb_memory(), gdbcheck(), readelf() and loads()
corefile    the one struct reader of our cores (headers, notes, NT_FILE)
readers     what eu-readelf, readelf and pycriu say (independent views)
debuggers   gdb on a fixture's core, output grouped per thread
gdbfacts    gdb's answers reduced to facts, for other gdb versions
kernelcore  making the kernel write cores of test programs
core2images the oracle: a kernel core turned into CRIU images
synth       synthetic checkpoints (also bench/bench.py's)
crossarch   the qemu-user targets: compiler, runner, gdb, registers
rawcore     CRIU images pycriu 3.17 cannot write (core2images')
imgedit, imagefuzz, inprocess   editing images, fuzzing them, main() in process
"""
