# Makefile for ParaFormer-C (paraformer.h + the `paraformer` program).
#
#   make               build build/paraformer (the command-line program)
#   make run           the main job: train a small ParaFormer progressively on
#                      Fashion-MNIST ($PARAFORMER_DATA, else the shipped
#                      sample), print the branch sweep, write the plot
#   make test          build and run every test; no PyTorch, no GPU needed
#   make test SAN=1    the same with AddressSanitizer + UBSan, in build-san/
#   make test-torch    live PyTorch interop check against tools/torch_ref.py
#                      (optional; needs PyTorch and NumPy in PYTHON, default
#                      /usr/bin/python3: apt-get install python3-torch
#                      libopenblas0-pthread on Debian)
#   make bench         speed of the three standard configurations (2 threads)
#   make bench-compare the same side by side with PyTorch and OpenBLAS
#                      (tools/bench_compare.py; needs python3-torch, libopenblas-dev)
#   make bench-tools   build build/paraformer and build/gemm_bench (OpenBLAS) only
#   make cuda          the GPU backend: build/paraformer_cuda.o (nvcc -arch=sm_90),
#                      build/cuda/paraformer (the program with --device cuda)
#                      and build/cuda/test_cuda; CUDA_ARCH=... for another GPU
#   make cuda-generic  the backend as PTX for compute_80 (any GPU from Ampere
#                      on; the driver compiles it at load time)
#   make test-cuda     CPU/GPU parity on a GPU machine (build/test_cuda)
#   make help          targets, variables and what was detected
#   make clean         remove build/ and build-san/
#
# Variables (command line or environment):
#   CC, CXX            compilers (cc, g++)
#   CFLAGS             optimisation/debug flags (default -O2 -g); never add
#                      -ffast-math/-Ofast: the tests compare against PyTorch
#   LDFLAGS, LDLIBS    extra link flags / libraries
#   OPENMP=0           build without OpenMP even if the compiler has it
#   STB=0              build without stb_image (no PNG/JPEG/BMP input)
#   STB_INC=DIR        where stb/stb_image.h lives (default /usr/include)
#   ZLIB=0             build without zlib (no .gz datasets)
#   SAN=1              sanitizers: -fsanitize=address,undefined, in build-san/
#                      (CC=clang CXX=clang++: + float-cast-overflow, build-san-clang/)
#   BENCH_THREADS=N    threads for `make bench` (default 2)
#   BENCH_ARGS=...     extra flags for each `paraformer bench` of `make bench`
#   COMPARE_ARGS=...   flags for tools/bench_compare.py (e.g. --quick)
#   NVCC=PATH          nvcc (default: on PATH, else /usr/local/cuda/bin/nvcc)
#   CUDA_HOME=DIR      the CUDA toolkit (default: nvcc's parent directory)
#   NCCL_HOME=DIR      NCCL's include/ and lib/ (default: the toolkit's, then
#                      the Python package nvidia.nccl)
#   CUDA_DEBUG=1       make cuda: checked launches by default (a kernel fault
#                      names its kernel) and -lineinfo (after rm -rf build/cuda)
#
# The library is header-only: every program compiles paraformer.h with
# PARAFORMER_IMPLEMENTATION in its own translation unit, so there is no
# library object to build.

.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
.SUFFIXES:

CXX      ?= g++
CFLAGS   ?= -O2 -g
STD      := -std=c99
CXXSTD   := -std=c++11
WARN     := -Wall -Wextra
LDLIBS   += -lm
PYTHON   ?= /usr/bin/python3

# ---------------------------------------------------------------------------
# Sanitizer build: everything goes to build-san/ so that it never mixes with
# the optimised objects in build/.

comma := ,
SAN ?= 0
ifeq ($(SAN),1)
# clang's UBSan can also check float->int conversions (gcc's cannot):
# make test SAN=1 CC=clang CXX=clang++ builds in build-san-clang/ with it
SAN_CLANG := $(if $(findstring clang,$(shell $(CC) --version 2>/dev/null | head -n 1)),1)
BUILD    := build-san$(if $(SAN_CLANG),-clang)
SANFLAGS := -fsanitize=address,undefined$(if $(SAN_CLANG),$(comma)float-cast-overflow) -fno-sanitize-recover=all \
            -g -O1 -fno-omit-frame-pointer
else
BUILD    := build
SANFLAGS :=
endif

# ---------------------------------------------------------------------------
# Detection. Each probe compiles a tiny program in a throw-away directory;
# the results are printed as ✓/✗ lines by `make`, `make test` and `make help`.

# try-cc FLAGS, SOURCE-TEXT[, LIBS]: "1" when SOURCE-TEXT compiles and links
# with FLAGS (and LIBS after the source)
try-cc = $(shell t=$$(mktemp -d 2>/dev/null) && printf '$(2)' > $$t/p.c && \
	$(CC) $(1) $$t/p.c -o $$t/p $(3) >/dev/null 2>&1 && echo 1; rm -rf $$t)
HASH := \#

OPENMP ?= 1
ifeq ($(OPENMP),1)
HAVE_OPENMP := $(call try-cc,-fopenmp,int omp_get_max_threads(void);\nint main(void) { return omp_get_max_threads() < 1; }\n)
endif
ifeq ($(HAVE_OPENMP),1)
OMPFLAGS := -fopenmp
endif

# stb_image is included as <stb/stb_image.h> (Debian's libstb-dev layout);
# STB_INC is the directory that holds stb/.
STB     ?= 1
STB_INC ?= /usr/include
ifeq ($(STB),1)
HAVE_STB := $(if $(wildcard $(STB_INC)/stb/stb_image.h),1)
endif
ifeq ($(HAVE_STB),1)
STBFLAGS := -DPF_HAVE_STB $(if $(filter /usr/include,$(STB_INC)),,-I$(STB_INC))
endif

# zlib (Debian's zlib1g-dev) for .gz datasets: -DPF_HAVE_ZLIB and -lz.
ZLIB ?= 1
ifeq ($(ZLIB),1)
HAVE_ZLIB := $(call try-cc,,$(HASH)include <zlib.h>\nint main(void) { return zlibVersion() == 0; }\n,-lz)
endif
ifeq ($(HAVE_ZLIB),1)
ZLIBFLAGS := -DPF_HAVE_ZLIB
LDLIBS    += -lz
endif

# OpenBLAS (Debian's libopenblas-dev) only for build/gemm_bench, the GEMM
# comparison of the benchmarks; probed only when a bench target is asked for,
# so `make` and `make test` never depend on it.
BENCH_GOALS := bench bench-tools bench-compare help
ifneq ($(filter $(BENCH_GOALS),$(MAKECMDGOALS)),)
OPENBLAS_CFLAGS ?= $(shell pkg-config --cflags openblas 2>/dev/null)
OPENBLAS_LIBS   ?= $(or $(shell pkg-config --libs openblas 2>/dev/null),-lopenblas)
HAVE_OPENBLAS := $(call try-cc,$(OPENBLAS_CFLAGS),$(HASH)include <cblas.h>\nint main(void) { openblas_set_num_threads(1); return 0; }\n,$(OPENBLAS_LIBS))
endif

# The GPU backend (make cuda) needs nvcc, cuBLAS and NCCL; nothing else does.
NVCC ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(if $(NVCC),$(patsubst %/bin/,%,$(dir $(realpath $(NVCC)))))
CUDA_ARCH ?= sm_90
ifeq ($(NCCL_HOME),)
NCCL_HOME := $(firstword $(foreach d,$(CUDA_HOME) /usr /usr/local,$(if $(wildcard $(d)/include/nccl.h),$(d))) \
               $(shell for p in $(PYTHON) python3; do $$p -c 'import nvidia.nccl as m; print(m.__path__[0])' 2>/dev/null && break; done))
endif
# the pip package (nvidia-nccl-cu13) ships lib/libnccl.so.2 without the
# unversioned link that -lnccl looks for
NCCL_LIB := $(if $(wildcard $(NCCL_HOME)/lib/libnccl.so),-lnccl,$(if $(wildcard $(NCCL_HOME)/lib/libnccl.so.2),-l:libnccl.so.2,-lnccl))

# Print the detection once per top-level make (not for `make clean`).
ifeq ($(MAKELEVEL),0)
ifneq ($(filter-out clean,$(or $(MAKECMDGOALS),all)),)
$(info $(if $(HAVE_OPENMP),✓ OpenMP     -fopenmp,✗ OpenMP     $(if $(filter 0,$(OPENMP)),disabled (OPENMP=0),not available): single-threaded build))
$(info $(if $(HAVE_STB),✓ stb_image  $(STB_INC)/stb/stb_image.h (-DPF_HAVE_STB),✗ stb_image  $(if $(filter 0,$(STB)),disabled (STB=0),$(STB_INC)/stb/stb_image.h not found (apt-get install libstb-dev)): no PNG/JPEG/BMP input))
$(info $(if $(HAVE_ZLIB),✓ zlib       -lz (-DPF_HAVE_ZLIB),✗ zlib       $(if $(filter 0,$(ZLIB)),disabled (ZLIB=0),<zlib.h> or -lz not found (apt-get install zlib1g-dev)): no .gz datasets))
$(info $(if $(NVCC),✓ nvcc       $(NVCC) (make cuda; NCCL: $(or $(NCCL_HOME),not found)),✗ nvcc       not found: make cuda cannot build the GPU backend (the CPU build never needs it)))
$(if $(filter 1,$(SAN)),$(info ✓ sanitizers address,undefined -> $(BUILD)/))
$(if $(filter $(BENCH_GOALS),$(MAKECMDGOALS)),$(info $(if $(HAVE_OPENBLAS),✓ OpenBLAS   <cblas.h> $(strip $(OPENBLAS_CFLAGS) $(OPENBLAS_LIBS)) (build/gemm_bench),✗ OpenBLAS   <cblas.h> or -lopenblas not found (apt-get install libopenblas-dev): no GEMM comparison)))
endif
endif

# Flags for every C program. The tests add -DPF_DOUBLE where they need it.
# STBFLAGS (-DPF_HAVE_STB) only go to the programs that compile stb_image's
# implementation themselves (build/paraformer, test_data): with it the
# library calls stbi_* functions, which every other program would lack.
ALL_CFLAGS   = $(STD) $(CFLAGS) $(SANFLAGS) $(WARN) $(OMPFLAGS) $(ZLIBFLAGS)
ALL_CXXFLAGS = $(CXXSTD) $(CFLAGS) $(SANFLAGS) $(WARN) $(OMPFLAGS) $(ZLIBFLAGS)
ALL_LDFLAGS  = $(LDFLAGS) $(SANFLAGS) $(OMPFLAGS)

# Everything is rebuilt when the flags change (`make STB=0` after `make`):
# $(BUILD)/flags holds the flags of the last build and is only rewritten
# when they differ.
FLAGS_FILE := $(BUILD)/flags
FLAGS_NOW   = $(CC) $(CXX) $(ALL_CFLAGS) $(STBFLAGS) $(ALL_LDFLAGS) $(LDLIBS)
ifneq ($(filter-out clean help,$(or $(MAKECMDGOALS),all)),)
$(shell mkdir -p $(BUILD) && { [ "$$(cat $(FLAGS_FILE) 2>/dev/null)" = '$(FLAGS_NOW)' ] || \
	echo '$(FLAGS_NOW)' > $(FLAGS_FILE); })
endif
HDR          = paraformer.h tests/pf_test.h tests/pf_alloc_guard.h tests/io_util.h $(FLAGS_FILE)
$(FLAGS_FILE):   # only needed after `make clean` in the same command
	@mkdir -p $(@D) && echo '$(FLAGS_NOW)' > $@

# ---------------------------------------------------------------------------
# The program

EXE := $(BUILD)/paraformer

# The examples (examples/*.c): short programs that use only the header. They
# are built by `make` so that they always compile; classify needs stb_image.
EXAMPLES := $(BUILD)/examples/train_fmnist $(BUILD)/examples/class_incremental \
            $(if $(HAVE_STB),$(BUILD)/examples/classify)

all: $(EXE) $(EXAMPLES)

$(BUILD)/examples/%: examples/%.c $(HDR) | $(BUILD)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(if $(filter %/classify,$@),$(STBFLAGS)) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

$(BUILD):
	@mkdir -p $@

$(EXE): tools/paraformer.c tools/bench_common.h tools/plot.h $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $(STBFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# ---------------------------------------------------------------------------
# Test programs. Each prints one line per check and ends with
# `N passed, M failed`; tests/run_all.sh runs them and adds the counts up.
# A test whose source is missing is skipped with a ✗ note (only while the
# project is being written: in the finished tree every source exists).

# test_ops: every op against finite differences, in double precision.
$(BUILD)/test_ops: tests/test_ops.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -DPF_DOUBLE -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_model: whole model against the PyTorch fixtures, in float and double.
$(BUILD)/test_model: tests/test_model.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)
$(BUILD)/test_model_f64: tests/test_model.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -DPF_DOUBLE -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_gemm: the fast kernels (GEMM, attention, GELU) against the reference loops.
$(BUILD)/test_gemm: tests/test_gemm.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_bf16: the bf16 GEMM path (emulated kernel, and vdpbf16ps where the CPU
# has it) against its scalar reference, and a bf16 training step against fp32.
$(BUILD)/test_bf16: tests/test_bf16.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_interop: PyTorch-written fixtures through the library and the program.
$(BUILD)/test_interop: tests/test_interop.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_safetensors, test_npy: hostile and truncated files through the
# library's readers (pf_st_open, pf_model_load; pf_npy_load), round trips
# through its writers.
$(BUILD)/test_safetensors: tests/test_safetensors.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)
$(BUILD)/test_npy: tests/test_npy.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_data: the dataset readers (every format, written here), specs,
# splits, statistics, augmentation and batches; the shipped data/fmnist-sample.
$(BUILD)/test_data: tests/test_data.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $(STBFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_train: the schedules, the branch sweep, compress/expand, byte-identical
# resume, option validation (on the shipped data/fmnist-sample).
$(BUILD)/test_train: tests/test_train.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_api: misuse of the public API (NULL arguments, calls out of order).
$(BUILD)/test_api: tests/test_api.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_plan: the multi-device plan of the GPU backend, on the CPU.
$(BUILD)/test_plan: tests/test_plan.c $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(LDLIBS)

# test_header_*: the header as a user compiles it, -Werror -pedantic: as C99
# and as C++, extern and PF_STATIC, always linked from two translation units
# (tests/test_header_tu2.c includes the header without the implementation, or
# with its own private copy under PF_STATIC). `mixed` links the C
# implementation with a C++ caller (extern "C" linkage).
HDR_WARN   := -Wall -Wextra -Werror -pedantic
HDR_CFLAGS  = $(STD) $(CFLAGS) $(SANFLAGS) $(HDR_WARN) $(OMPFLAGS) $(ZLIBFLAGS)
HDR_CXFLAGS = $(CXXSTD) -x c++ $(CFLAGS) $(SANFLAGS) $(HDR_WARN) $(OMPFLAGS) $(ZLIBFLAGS)
HDR_SRCS   := tests/test_header.c tests/test_header_tu2.c $(HDR)
HDR_BINS   := test_header_c test_header_c_static test_header_cpp test_header_cpp_static test_header_mixed

# hdr-test MAIN-LANG, TU2-LANG, EXTRA-FLAGS: compile both translation units to
# objects (c or cxx) and link them with the C++ driver (a no-op for C code).
hdr-cc-c   = $(CC) $(HDR_CFLAGS)
hdr-cc-cxx = $(CXX) $(HDR_CXFLAGS)
define hdr-test
	$(hdr-cc-$(1)) $(3) -DPF_HEADER_TU2 -c -o $@.main.o tests/test_header.c
	$(hdr-cc-$(2)) $(3) -DPF_HEADER_TU2 -c -o $@.tu2.o tests/test_header_tu2.c
	$(CXX) -o $@ $@.main.o $@.tu2.o $(ALL_LDFLAGS) $(LDLIBS)
endef

$(BUILD)/test_header_c: $(HDR_SRCS) | $(BUILD)
	$(call hdr-test,c,c,)
$(BUILD)/test_header_c_static: $(HDR_SRCS) | $(BUILD)
	$(call hdr-test,c,c,-DPF_STATIC)
$(BUILD)/test_header_cpp: $(HDR_SRCS) | $(BUILD)
	$(call hdr-test,cxx,cxx,)
$(BUILD)/test_header_cpp_static: $(HDR_SRCS) | $(BUILD)
	$(call hdr-test,cxx,cxx,-DPF_STATIC)
$(BUILD)/test_header_mixed: $(HDR_SRCS) | $(BUILD)
	$(call hdr-test,c,cxx,)

# The GPU backend compiled for the CPU (-DPF_CUDA_EMULATE: kernels run as
# loops, GEMMs as pf_gemm, collectives over emulated devices), and
# tests/test_cuda.c linked with it: the backend's parity tests on any machine.
$(BUILD)/paraformer_cuda_emu.o: paraformer_cuda.cu $(HDR) | $(BUILD)
	$(CXX) $(ALL_CXXFLAGS) -x c++ -DPF_CUDA_EMULATE -c -o $@ $<
$(BUILD)/paraformer_emu: tools/paraformer.c tools/bench_common.h tools/plot.h $(BUILD)/paraformer_cuda_emu.o $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $(STBFLAGS) -DPF_WITH_CUDA -c -o $@.o $<
	$(CXX) -o $@ $@.o $(BUILD)/paraformer_cuda_emu.o $(ALL_LDFLAGS) $(LDLIBS)
$(BUILD)/test_cuda_emu: tests/test_cuda.c $(BUILD)/paraformer_cuda_emu.o $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@.o $<
	$(CXX) -o $@ $@.o $(BUILD)/paraformer_cuda_emu.o $(ALL_LDFLAGS) $(LDLIBS)

# What exists decides what is built and run (see the note above).
have = $(wildcard $(1))
TESTS_C := \
  $(if $(call have,tests/test_header.c),$(addprefix $(BUILD)/,$(HDR_BINS))) \
  $(if $(call have,tests/test_safetensors.c),$(BUILD)/test_safetensors) \
  $(if $(call have,tests/test_npy.c),$(BUILD)/test_npy) \
  $(if $(call have,tests/test_data.c),$(BUILD)/test_data) \
  $(if $(call have,tests/test_train.c),$(BUILD)/test_train) \
  $(if $(call have,tests/test_plan.c),$(BUILD)/test_plan) \
  $(if $(call have,tests/test_api.c),$(BUILD)/test_api) \
  $(if $(call have,tests/test_cuda.c),$(BUILD)/test_cuda_emu) \
  $(if $(call have,tests/test_ops.c),$(BUILD)/test_ops) \
  $(if $(call have,tests/test_gemm.c),$(BUILD)/test_gemm) \
  $(if $(call have,tests/test_bf16.c),$(BUILD)/test_bf16) \
  $(if $(call have,tests/test_model.c),$(BUILD)/test_model $(BUILD)/test_model_f64) \
  $(if $(call have,tests/test_interop.c),$(BUILD)/test_interop)
TEST_EXE := $(if $(call have,tools/paraformer.c),$(EXE))
# the program with the GPU backend emulated on the CPU: test_cli.sh checks
# its --device cuda against the CPU build (PARAFORMER_EMU)
TEST_EMU := $(if $(TEST_EXE),$(if $(call have,paraformer_cuda.cu),$(BUILD)/paraformer_emu))
# test_cli.sh and test_interop run the program: they only make sense with it.
TESTS_RUN := $(TESTS_C) $(if $(TEST_EXE),tests/test_cli.sh)
ifeq ($(TEST_EXE),)
TESTS_RUN := $(filter-out %/test_interop,$(TESTS_RUN))
endif
MISSING := $(foreach f,tools/paraformer.c tests/test_header.c tests/test_header_tu2.c tests/test_safetensors.c \
             tests/test_npy.c tests/test_ops.c tests/test_model.c tests/test_interop.c tests/test_data.c \
             tests/test_train.c tests/test_cli.sh,$(if $(call have,$(f)),,$(f)))

# `make test`: build everything first, then run. tests/run_all.sh prints each
# program's output, a summary, and as its very last line the summed
# `N passed, M failed`; it exits non-zero when any check fails or any program
# crashes or exits non-zero. PARAFORMER_EXE tells the tests which program to
# run (build-san/paraformer under SAN=1), PARAFORMER_EMU the one with the
# emulated GPU backend.
test: $(TESTS_C) $(TEST_EXE) $(TEST_EMU) $(EXAMPLES)
	@for f in $(MISSING); do echo "✗ $$f is missing: skipped (the finished tree has every test)"; done
	@PARAFORMER_EXE=$(EXE) PARAFORMER_EMU=$(TEST_EMU) tests/run_all.sh $(TESTS_RUN)

# The main job (tools/run_fmnist.sh; RUN_DIR, RUN_EPOCHS, PARAFORMER_DATA).
run: $(EXE)
	@PARAFORMER_EXE=$(EXE) tools/run_fmnist.sh

# Optional: live interop against PyTorch (not part of `make test`): the
# program against the reference model tools/torch_ref.py. Without PyTorch
# the script says what to install and fails.
TORCH_HINT := Debian: apt-get install python3-torch libopenblas0-pthread
test-torch: $(EXE)
	@command -v $(firstword $(PYTHON)) >/dev/null 2>&1 || { echo "error: $(firstword $(PYTHON)) not found: make test-torch needs Python 3 with PyTorch and NumPy ($(TORCH_HINT); or PYTHON=...)" >&2; exit 1; }
	$(PYTHON) tools/torch_interop.py $(EXE)

# ---------------------------------------------------------------------------
# The GPU backend (docs/design.md §5). `make cuda` only compiles and links (CI does it
# on machines without a GPU); `make test-cuda` runs the parity tests on one.

CUDA_BUILD   := build/cuda
NVCCFLAGS    ?= -O2 -g
NVCC_ALL      = $(NVCCFLAGS) -std=c++14 --extended-lambda -Xcompiler -Wall,-fopenmp $(ZLIBFLAGS) \
                $(if $(NCCL_HOME),-I$(NCCL_HOME)/include) $(if $(CUDA_DEBUG),-lineinfo -DPF_CUDA_DEBUG)
CUDA_LIBS     = $(if $(NCCL_HOME),-L$(NCCL_HOME)/lib -Wl$(comma)-rpath$(comma)$(NCCL_HOME)/lib) \
                -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas $(NCCL_LIB) -lcudart

cuda-check:
	@test -n "$(NVCC)" || { echo "error: nvcc not found: install the CUDA toolkit or set NVCC=/path/to/nvcc" >&2; exit 1; }
	@test -n "$(NCCL_HOME)" || { echo "error: NCCL not found (nccl.h): set NCCL_HOME to the folder holding include/nccl.h and lib/libnccl.so" >&2; exit 1; }

# The object is kept only when tools/cuda_gate.sh passes it: no kernel spills
# registers, none has over 4 KB of parameters (ptxas -v and the PTX; the
# counts are printed, the full report is in $(CUDA_BUILD)/ptxas.log).
$(CUDA_BUILD)/paraformer_cuda.o: paraformer_cuda.cu $(HDR) tools/cuda_gate.sh | cuda-check
	@mkdir -p $(@D)
	$(NVCC) $(NVCC_ALL) -arch=$(CUDA_ARCH) -Xptxas -v -c -o $@ $< 2>$(CUDA_BUILD)/ptxas.log; \
	  rc=$$?; grep -v -e '^ptxas info' -e '^    [0-9]* bytes stack frame' $(CUDA_BUILD)/ptxas.log >&2; \
	  [ $$rc = 0 ] || { rm -f $@; exit $$rc; }
	$(NVCC) $(NVCC_ALL) -arch=$(CUDA_ARCH) -ptx -o $(CUDA_BUILD)/paraformer_cuda.ptx $< 2>/dev/null || { rm -f $@; exit 1; }
	sh tools/cuda_gate.sh $(CUDA_BUILD)/ptxas.log $(CUDA_BUILD)/paraformer_cuda.ptx || { rm -f $@; exit 1; }
$(CUDA_BUILD)/paraformer_cuda_generic.o: paraformer_cuda.cu $(HDR) | cuda-check
	@mkdir -p $(@D)
	$(NVCC) $(NVCC_ALL) -gencode arch=compute_80,code=compute_80 -c -o $@ $<
$(CUDA_BUILD)/test_cuda: tests/test_cuda.c $(CUDA_BUILD)/paraformer_cuda.o $(HDR)
	$(CC) $(ALL_CFLAGS) -c -o $@.o $<
	$(CXX) -o $@ $@.o $(CUDA_BUILD)/paraformer_cuda.o $(ALL_LDFLAGS) $(CUDA_LIBS) $(LDLIBS)
$(CUDA_BUILD)/paraformer: tools/paraformer.c tools/bench_common.h tools/plot.h $(CUDA_BUILD)/paraformer_cuda.o $(HDR)
	$(CC) $(ALL_CFLAGS) $(STBFLAGS) -DPF_WITH_CUDA -c -o $@.o $<
	$(CXX) -o $@ $@.o $(CUDA_BUILD)/paraformer_cuda.o $(ALL_LDFLAGS) $(CUDA_LIBS) $(LDLIBS)

cuda: $(CUDA_BUILD)/paraformer_cuda.o $(CUDA_BUILD)/test_cuda $(if $(call have,tools/paraformer.c),$(CUDA_BUILD)/paraformer)
cuda-generic: $(CUDA_BUILD)/paraformer_cuda_generic.o
test-cuda: $(CUDA_BUILD)/test_cuda
	$(CUDA_BUILD)/test_cuda

# ---------------------------------------------------------------------------
# Benchmarks (docs/design.md §6). Not part of `make test`.

GEMM_BENCH := $(BUILD)/gemm_bench
BENCH_THREADS ?= 2
BENCH_ARGS ?=
COMPARE_ARGS ?=

$(GEMM_BENCH): tools/gemm_bench.c tools/bench_common.h $(HDR) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $(OPENBLAS_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(OPENBLAS_LIBS) $(LDLIBS)

bench-tools: $(EXE) $(if $(HAVE_OPENBLAS),$(GEMM_BENCH))

# The three standard configurations at batch 128: one table row each.
bench: bench-tools
	@echo "paraformer bench, $(BENCH_THREADS) threads (training: forward + backward + AdamW;"
	@echo "inference: the same batch; latency: batch 1; % of the FP32 FMA peak measured in the same run)"
	@$(EXE) bench --row-header
	@$(EXE) bench --zoo vit12 --threads $(BENCH_THREADS) --peak --row $(BENCH_ARGS)
	@$(EXE) bench --zoo pf4x3 --threads $(BENCH_THREADS) --peak --row $(BENCH_ARGS)
	@$(EXE) bench --zoo pf2x3 --dim 128 --heads 4 --dataset fmnist --threads $(BENCH_THREADS) --peak --row $(BENCH_ARGS)
	@echo "per-op detail: $(EXE) bench --zoo vit12 --threads $(BENCH_THREADS)$(if $(HAVE_OPENBLAS),; GEMM vs OpenBLAS: $(GEMM_BENCH))"
	@echo "against PyTorch and OpenBLAS: make bench-compare"

bench-compare: bench-tools
	$(PYTHON) tools/bench_compare.py $(COMPARE_ARGS)

# ---------------------------------------------------------------------------
# Fuzzing (tests/fuzz/README.md). Not part of `make test`.
#
#   make fuzz              libFuzzer harnesses in build-fuzz/ (clang; ASan +
#                          UBSan, every report fatal): fuzz_safetensors
#                          (+ model load, predict, a training step, compress,
#                          expand, resume), fuzz_npy, fuzz_config,
#                          fuzz_dataset (IDX raw/.gz, CIFAR-10/100, npy pairs,
#                          image folders), fuzz_image
#   make fuzz-run FUZZ_S=60  each harness FUZZ_S seconds on a scratch copy of
#                          its seed corpus (tests/fuzz/corpus/NAME); fails if
#                          any crashes, naming the saved input
#   make fuzz-corpus       rewrite tests/fuzz/corpus/ with the project's
#                          writers (build/paraformer, build-fuzz/make_corpus)
#   make fuzz-clean        remove build-fuzz/
# Variables: FUZZ_CC (clang), FUZZ_S (60), FUZZ_RUNS (N inputs from seed 1 instead of FUZZ_S), FUZZ_NAMES (all five; e.g.
# FUZZ_NAMES="npy config" for some).

FUZZ_CC    ?= clang
FUZZ_S     ?= 60
FUZZ_RUNS  ?=
FUZZ_BUILD := build-fuzz
FUZZ_NAMES ?= safetensors npy config dataset image
FUZZ_BINS   = $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_NAMES))
FUZZ_SAN   := -fsanitize=fuzzer,address,undefined,float-cast-overflow -fno-sanitize-recover=all
# stb_image's implementation is compiled into each harness (fuzz_common.h)
# under the same flags, so UBSan checks it too. No OpenMP: one thread.
FUZZ_FLAGS  = -std=c99 -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) -Wall -Wextra -Wno-unknown-pragmas \
              $(STBFLAGS) $(ZLIBFLAGS)
FUZZ_LIBS  := -lz -lm
FUZZ_HINT  := Debian: apt-get install clang libclang-rt-14-dev
FUZZ_SRCS  := tests/fuzz/fuzz_common.h paraformer.h $(FUZZ_BUILD)/flags

# rebuild when the compiler or the flags change (as $(BUILD)/flags does)
ifneq ($(filter fuzz fuzz-run fuzz-corpus $(FUZZ_BUILD)/%,$(MAKECMDGOALS)),)
$(shell mkdir -p $(FUZZ_BUILD) && { [ "$$(cat $(FUZZ_BUILD)/flags 2>/dev/null)" = '$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_LIBS)' ] || \
	echo '$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_LIBS)' > $(FUZZ_BUILD)/flags; })
endif
$(FUZZ_BUILD)/flags:
	@mkdir -p $(@D) && echo '$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_LIBS)' > $@

# clang with libFuzzer and the sanitizer runtimes, stb_image and zlib: each
# missing piece is named with what to install.
fuzz-check: fuzz-check-libs
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "error: $(FUZZ_CC) not found: make fuzz needs clang with libFuzzer ($(FUZZ_HINT); or FUZZ_CC=...)" >&2; exit 1; }
	@t=$$(mktemp -d) && printf '$(HASH)include <stddef.h>\n$(HASH)include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' > $$t/p.c && \
	if $(FUZZ_CC) $(FUZZ_SAN) $$t/p.c -o $$t/p >$$t/log 2>&1; then rm -rf $$t; else \
	sed -n 1,5p $$t/log >&2; rm -rf $$t; echo "error: $(FUZZ_CC) cannot link -fsanitize=fuzzer,address,undefined (the libFuzzer and sanitizer runtimes are missing? $(FUZZ_HINT))" >&2; exit 1; fi
fuzz-check-libs:
	@test -n "$(HAVE_STB)" || { echo "error: fuzzing needs stb_image ($(STB_INC)/stb/stb_image.h not found: apt-get install libstb-dev)" >&2; exit 1; }
	@test -n "$(HAVE_ZLIB)" || { echo "error: fuzzing needs zlib (<zlib.h>, -lz not found: apt-get install zlib1g-dev)" >&2; exit 1; }

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_SRCS) | fuzz-check
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIBS)

fuzz: $(FUZZ_BINS)

fuzz-run: $(FUZZ_BINS)
	@FUZZ_S=$(FUZZ_S) FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_BUILD=$(FUZZ_BUILD) tests/fuzz/run.sh $(FUZZ_NAMES)

# the seed corpora: the program's models and checkpoints, the rest from
# build-fuzz/make_corpus (an ordinary build, with stb_image_write and zlib)
$(FUZZ_BUILD)/make_corpus: tests/fuzz/make_corpus.c paraformer.h | fuzz-check-libs
	@mkdir -p $(@D)
	$(CC) $(STD) $(CFLAGS) $(WARN) -Wno-unknown-pragmas $(STBFLAGS) $(ZLIBFLAGS) -o $@ $< $(LDFLAGS) -lz -lm

fuzz-corpus: $(EXE) $(FUZZ_BUILD)/make_corpus
	tests/fuzz/make_corpus.sh $(EXE) $(FUZZ_BUILD)/make_corpus

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

clean:
	rm -rf build build-san build-san-clang

help:
	@echo "targets:"
	@echo "  make              build $(EXE) from tools/paraformer.c"
	@echo "  make run          train on Fashion-MNIST (PARAFORMER_DATA or data/fmnist-sample), sweep, plot"
	@echo "  make test         build and run every test (no PyTorch or GPU needed)"
	@echo "  make test SAN=1   the same under AddressSanitizer + UBSan, in build-san/"
	@echo "  make test-torch   $(PYTHON) tools/torch_interop.py $(EXE) (needs PyTorch: $(TORCH_HINT))"
	@echo "  make bench        $(EXE) bench on vit12, pf4x3, pf2x3 at $(BENCH_THREADS) threads (BENCH_ARGS=...)"
	@echo "  make bench-compare  $(PYTHON) tools/bench_compare.py (ours vs PyTorch vs OpenBLAS; COMPARE_ARGS=--quick)"
	@echo "  make bench-tools  build $(EXE) and $(GEMM_BENCH) (needs libopenblas-dev)"
	@echo "  make cuda         GPU backend, program and tests in $(CUDA_BUILD)/ (nvcc -arch=$(CUDA_ARCH); NCCL_HOME=$(NCCL_HOME))"
	@echo "  make cuda-generic the backend as PTX (compute_80)"
	@echo "  make test-cuda    CPU/GPU parity tests (needs a GPU)"
	@echo "  make fuzz         libFuzzer harnesses (clang, ASan + UBSan) in $(FUZZ_BUILD)/: $(FUZZ_NAMES)"
	@echo "  make fuzz-run     run each for FUZZ_S=$(FUZZ_S) seconds on its seeds (tests/fuzz/corpus/); fails on any crash"
	@echo "  make fuzz-corpus  regenerate tests/fuzz/corpus/ with the project's writers; make fuzz-clean: remove $(FUZZ_BUILD)/"
	@echo "  make clean        remove build/ and build-san/"
	@echo "variables: CC=$(CC) CXX=$(CXX) CFLAGS='$(CFLAGS)' OPENMP=$(OPENMP) STB=$(STB) ZLIB=$(ZLIB) SAN=$(SAN)"
	@echo "compile:   $(CC) $(ALL_CFLAGS) [$(STBFLAGS) for build/paraformer, test_data] ... $(ALL_LDFLAGS) $(LDLIBS)"

.PHONY: all run test test-torch bench bench-tools bench-compare clean help cuda cuda-generic cuda-check test-cuda \
        fuzz fuzz-run fuzz-check fuzz-check-libs fuzz-corpus fuzz-clean
