# CCViT trainer. `make` builds everything, `make test` runs every test,
# `make deps` installs what a fresh Debian 12 machine lacks, `make run` is the
# main job, `make bench` the side-by-side benchmarks. Overrides: NO_NATIVE=1,
# NO_OMP=1, NO_MPI=1, DEBUG=1 (-O0 -g, sanitizers off), CC=clang; for the checks:
# WERROR=1, SANITIZE=1 (`make test` uses both), `make analyse` (cppcheck, clang-tidy).

# a recipe that fails leaves no half-written target behind for the next make to trust
.DELETE_ON_ERROR:

CC      ?= gcc
PYTHON  := /usr/bin/python3
BUILD   := build

CFLAGS  := -O3 -std=gnu11 -Wall -Wextra -fPIC -MMD -MP -Iground -Itrainer -Idata_loaders
LDLIBS  := -lm -lpthread

ifeq ($(DEBUG),1)
  CFLAGS := $(filter-out -O3,$(CFLAGS)) -O0 -g
endif

# WERROR=1: a warning fails the build. `make test` (so .ci/run) compiles with it,
# every tree it builds, so a new warning fails the suite. A plain `make` stays
# tolerant: a compiler newer than the ones the code is checked with (gcc 12,
# clang 14) may add warnings, and someone building to train should not be
# stopped by one.
ifeq ($(WERROR),1)
  CFLAGS += -Werror
endif

# SANITIZE=1: AddressSanitizer (with LeakSanitizer) and UBSan at -O1 -g; any
# undefined behaviour aborts. `make test` builds the library, the C tests and
# train this way in build-asan/ and runs the C tests there.
ifeq ($(SANITIZE),1)
  SANITIZERS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
  CFLAGS := $(filter-out -O3,$(CFLAGS)) -O1 -g -fno-omit-frame-pointer $(SANITIZERS)
  LDLIBS += $(SANITIZERS)
endif

# ---- probes: each prints what it chose and why ------------------------------
define trial_compile
$(shell printf 'int main(void){return 0;}\n' | $(CC) $(1) -x c - -o /dev/null 2>/dev/null && echo yes)
endef

ifeq ($(NO_NATIVE),1)
  $(info ✗ -march=native: disabled by NO_NATIVE=1)
else ifeq ($(call trial_compile,-march=native),yes)
  CFLAGS += -march=native
  $(info ✓ -march=native: trial compile accepted it)
else
  $(info ✗ -march=native: trial compile rejected it, building generic x86-64)
endif

ifeq ($(NO_OMP),1)
  CFLAGS += -Wno-unknown-pragmas
  $(info ✗ OpenMP: disabled by NO_OMP=1, kernels run on one thread)
else ifeq ($(call trial_compile,-fopenmp),yes)
  CFLAGS += -fopenmp
  LDLIBS += -fopenmp
  $(info ✓ OpenMP: -fopenmp accepted; one thread pool for kernels and BLAS)
else
  CFLAGS += -Wno-unknown-pragmas
  $(info ✗ OpenMP: $(CC) rejected -fopenmp, kernels run on one thread)
endif

# OpenBLAS: Debian's OpenMP build (libopenblas0-openmp) shares OpenMP's pool, and
# a BLAS call made inside a parallel region runs on one thread, so the two
# never oversubscribe. tools/scripts/install_deps.sh selects it.
OPENBLAS_LIB := $(shell readlink -f /usr/lib/x86_64-linux-gnu/libopenblas.so.0 2>/dev/null)
ifneq ($(findstring openmp,$(OPENBLAS_LIB)),)
  $(info ✓ OpenBLAS: OpenMP build ($(OPENBLAS_LIB)))
else ifneq ($(OPENBLAS_LIB),)
  $(info ✗ OpenBLAS: $(OPENBLAS_LIB) is not the OpenMP build; run `make deps` to avoid oversubscription)
else
  $(info ✗ OpenBLAS: not found; run `make deps`)
endif
LDLIBS += -lopenblas

HDF5_CFLAGS := $(shell pkg-config --cflags hdf5 2>/dev/null)
HDF5_LIBS   := $(shell pkg-config --libs hdf5 2>/dev/null)
ifeq ($(HDF5_LIBS),)
  HDF5_CFLAGS := -I/usr/include/hdf5/serial
  HDF5_LIBS   := -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5
endif
CFLAGS += $(HDF5_CFLAGS)

# Open MPI: data-parallel training across processes/machines (mpirun -np N build/bin/train ...).
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS   := $(shell pkg-config --libs ompi-c 2>/dev/null)
ifeq ($(NO_MPI),1)
  $(info ✗ Open MPI: disabled by NO_MPI=1, the trainer runs as one process)
else ifneq ($(MPI_LIBS),)
  CFLAGS += -DHAVE_MPI $(MPI_CFLAGS)
  LDLIBS += $(MPI_LIBS)
  $(info ✓ Open MPI: found (pkg-config ompi-c); mpirun -np N build/bin/train runs data-parallel)
else
  $(info ✗ Open MPI: not found; the trainer runs as one process (run `make deps`))
endif
LDLIBS += $(HDF5_LIBS) -ljpeg -lpng -lyaml -lz

# ---- sources ------------------------------------------------------------------
# Programs, listed: the trainer, the user tools (tools/programs/), the benchmarks
# (tools/bench/). Library: every other .c in ground/, trainer/ and data_loaders/.
# Tests: tests/test_*.c.
PROG_SRCS := trainer/train.c \
             $(addprefix tools/programs/,build_tokenizer.c check_data.c ckpt_info.c config_check.c eval.c make_shards.c reconstruct.c) \
             $(addprefix tools/bench/,bench_kmeans.c bench_loader.c bench_pretrain.c bench_vit.c)
UNLISTED  := $(filter-out $(PROG_SRCS),$(shell grep -l '^int main' ground/*.c trainer/*.c tools/*.c tools/*/*.c 2>/dev/null))
ifneq ($(UNLISTED),)
  $(error $(UNLISTED) has a main() but is not in PROG_SRCS: list the program in the Makefile)
endif
LIB_SRCS  := $(filter-out $(PROG_SRCS),$(wildcard ground/*.c trainer/*.c trainer/heads/*.c data_loaders/*.c))
TEST_SRCS := $(wildcard tests/test_*.c)
# Under mpirun only (tests/test_distributed.py starts them with 2 and 4 ranks).
MPI_TEST_SRCS := $(wildcard tests/mpi_*.c)

LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
PROGS     := $(addprefix $(BUILD)/bin/,$(notdir $(PROG_SRCS:.c=)))
TESTS     := $(addprefix $(BUILD)/tests/,$(notdir $(TEST_SRCS:.c=)))
MPI_TESTS := $(addprefix $(BUILD)/tests_mpi/,$(notdir $(MPI_TEST_SRCS:.c=)))

all: $(BUILD)/libccvit.a $(BUILD)/libccvit.so $(PROGS) $(TESTS) $(MPI_TESTS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The code version a checkpoint records is the tree the binaries were built
# from, not the git state of whatever directory a run starts in. The header is
# rewritten only when the version changes, so only checkpoint.o recompiles.
VERSION_H := $(BUILD)/gen/code_version.h
$(VERSION_H): FORCE
	@mkdir -p $(dir $@)
	@v=$$(git describe --always --dirty 2>/dev/null || echo unknown); \
	  printf '#define CCVIT_CODE_VERSION "%s"\n' "$$v" > $@.tmp; \
	  if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi
$(BUILD)/obj/trainer/checkpoint.o: $(VERSION_H)
$(BUILD)/obj/trainer/checkpoint.o: CFLAGS += -I$(BUILD)/gen
FORCE:

# Written afresh: `ar r` into an old archive would keep the member of a source since moved or removed.
$(BUILD)/libccvit.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

# The shared library lets the Python tests call each kernel through ctypes.
$(BUILD)/libccvit.so: $(LIB_OBJS)
	$(CC) -shared -o $@ $^ $(LDLIBS)

$(BUILD)/bin/%: $(BUILD)/obj/trainer/%.o $(BUILD)/libccvit.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/%: $(BUILD)/obj/tools/programs/%.o $(BUILD)/libccvit.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/%: $(BUILD)/obj/tools/bench/%.o $(BUILD)/libccvit.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/libccvit.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDLIBS)

$(BUILD)/tests_mpi/%: $(BUILD)/obj/tests/%.o $(BUILD)/libccvit.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDLIBS)

.SECONDARY: $(LIB_OBJS) $(PROG_SRCS:%.c=$(BUILD)/obj/%.o) $(TEST_SRCS:%.c=$(BUILD)/obj/%.o) $(MPI_TEST_SRCS:%.c=$(BUILD)/obj/%.o)

# ---- sanitizers and build matrix ---------------------------------------------
# `make test` also builds, each in its own tree with WERROR=1: build-asan/
# (SANITIZE=1) and one tree per override the README advertises (build-noomp,
# build-nonative, build-nompi, build-clang), each with the library, the C tests
# and train only (the other tools add build time and no new configuration). It
# runs the C tests in build-asan/ (tests/sanitizers.supp: suppressions, each with
# why) and in build-nonative/ (the GEMM tiles fall back to OpenBLAS there). The
# Python tests keep the optimised build/. The C test runs go one after another
# (test_loader writes build/test_loader/ whatever tree it was built in).
core: $(BUILD)/libccvit.a $(BUILD)/bin/train $(TESTS)

MATRIX          := noomp nonative nompi clang
MATRIX_noomp    := NO_OMP=1
MATRIX_nonative := NO_NATIVE=1
MATRIX_nompi    := NO_MPI=1
MATRIX_clang    := CC=clang
SUBMAKE         := $(MAKE) --no-print-directory WERROR=1

build-matrix: $(addprefix build-matrix-,$(MATRIX))
build-matrix-%:
	@echo "== build-$*: $(MATRIX_$*) (library, C tests, train)"
	+$(SUBMAKE) BUILD=build-$* $(MATRIX_$*) core

build-asan:
	@echo "== build-asan: SANITIZE=1 (library, C tests, train)"
	+$(SUBMAKE) BUILD=build-asan SANITIZE=1 core

# Not detect_stack_use_after_return: its fake stack frames break the 64-byte
# alignment of AVX-512 spills (test_bf16 faults in a vmovaps, no bug of ours).
SANITIZER_ENV := ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1 \
                 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers.supp:print_suppressions=0 \
                 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test-asan: build-asan
	$(SANITIZER_ENV) $(PYTHON) tests/run_tests.py --build build-asan --c-only

# after test-asan: the two runs must not share build/test_loader/
test-matrix: build-matrix test-asan
	$(PYTHON) tests/run_tests.py --build build-nonative --c-only

# The main suite (the recipe of `test` below) runs after these; analyse takes
# about a minute on 2 cores, so `make test` runs it too.
test: test-asan test-matrix analyse
test test-fast: CFLAGS += -Werror

clean: clean-matrix
clean-matrix:
	rm -rf build-asan $(addprefix build-,$(MATRIX))

# Static analysis (docs/analysis.md): cppcheck, then clang-tidy-14 with the
# checks in .clang-tidy, over the library and the user tools, with the flags the
# build uses (includes, defines, -march, -fopenmp). Any finding fails; a false
# positive is suppressed at its line with the reason.
ANALYSE_SRCS  := $(wildcard ground/*.c trainer/*.c trainer/heads/*.c data_loaders/*.c tools/programs/*.c)
ANALYSE_FLAGS := -std=gnu11 -I$(BUILD)/gen $(filter -I% -D% -march=% -fopenmp,$(CFLAGS))
analyse: $(VERSION_H)
	cppcheck -j2 --enable=warning,performance,portability --inline-suppr --error-exitcode=1 --std=c11 --quiet \
	  --template='{file}:{line}: {severity}: {id}: {message}' -Iground -Itrainer -Idata_loaders ground trainer data_loaders tools/programs
	printf '%s\n' $(ANALYSE_SRCS) | xargs -P2 -n4 sh -c 'clang-tidy-14 --quiet "$$@" -- $(ANALYSE_FLAGS) 2>/dev/null' sh
	@echo "analyse: cppcheck and clang-tidy clean"

.PHONY: core build-matrix build-asan test-asan test-matrix clean-matrix analyse

# ---- the commands ---------------------------------------------------------------
deps:
	bash tools/scripts/install_deps.sh

test: all shards fuzz-replay
	$(PYTHON) tests/run_tests.py

# The C tests and the Python tests that take seconds (under a minute); `make test` runs everything.
test-fast: all shards
	$(PYTHON) tests/run_tests.py --fast

# Each tools/bench/bench_*.sh runs one side-by-side comparison. They hold a lock so
# that two benchmarks never share the 2 cores.
bench: all
	@for b in tools/bench/bench_*.sh; do echo "== $$b"; flock /tmp/ccvit-bench.lock bash $$b || exit 1; done

# Where a pretraining step's time goes, per kernel (perf; tools/bench/profile_step.sh --help).
profile: all
	flock /tmp/ccvit-bench.lock bash tools/bench/profile_step.sh fmnist_28 4
	flock /tmp/ccvit-bench.lock bash tools/bench/profile_step.sh vit_ti_224 3

# Shards for the data loaders (data/ is gitignored): written by
# build/bin/make_shards only when the manifest is missing.
FMNIST_DIR := /usr/share/datasets/fashion-mnist
# The 1000 real ImageNet photos of the workplace (override: make shards-imagenet IMAGENET_SAMPLE=DIR).
IMAGENET_SAMPLE ?= ../shared/data/imagenet-sample
shards: data/fashion-mnist/train-manifest.txt data/fashion-mnist/test-manifest.txt
shards-imagenet: data/imagenet-sample/train-manifest.txt

data/fashion-mnist/%-manifest.txt: | $(BUILD)/bin/make_shards
	$(BUILD)/bin/make_shards --fashion-mnist $(FMNIST_DIR) --split $* --out data/fashion-mnist/$* --format png --per-shard 10000

data/imagenet-sample/train-manifest.txt: | $(BUILD)/bin/make_shards
	@test -d "$(IMAGENET_SAMPLE)" || { echo "error: $(IMAGENET_SAMPLE) not found: give the ImageNet-style photo folder with IMAGENET_SAMPLE=DIR (root/<class>/<image>)"; exit 1; }
	$(BUILD)/bin/make_shards --image-folder $(IMAGENET_SAMPLE) --out data/imagenet-sample/train --per-shard 250 --seed 0

# The main job: install what is missing, build, then shards -> tokenizer ->
# pretraining -> evaluation -> results table (tools/scripts/main_job.sh).
run:
	bash tools/scripts/install_deps.sh
	$(MAKE) --no-print-directory all
	bash tools/scripts/main_job.sh

clean:
	rm -rf $(BUILD)

.PHONY: all deps test test-fast bench profile clean run shards shards-imagenet FORCE

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- fuzzing ----------------------------------------------------------------------
# libFuzzer harnesses (tests/fuzz/fuzz_<name>.c) over every parser of untrusted input,
# each calling the library functions the trainer calls. The library sources are
# compiled again for them with clang-14, ASan and UBSan (no OpenMP, no -march=native,
# no MPI) into $(FUZZ_BUILD). `make fuzz` runs each harness for FUZZ_SECONDS on one
# core (new inputs go to $(FUZZ_BUILD)/corpus/<name>, crashes to
# $(FUZZ_BUILD)/artifacts/<name>/); `make fuzz-replay` (part of `make test`) runs every
# checked-in corpus and regression input once. tests/fuzz/README.md has the details.
FUZZ_CC       ?= clang-14
FUZZ_SECONDS  ?= 600
FUZZ_FLAGS    ?= -close_fd_mask=3
FUZZ_BUILD    := $(BUILD)/fuzz
FUZZ_CFLAGS   := -O1 -g -std=gnu11 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                 -fno-omit-frame-pointer -DCCVIT_FUZZING -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
                 -Wno-unknown-pragmas -Wno-psabi -MMD -MP -Iground -Itrainer -Idata_loaders -I$(BUILD)/gen $(HDF5_CFLAGS)
FUZZ_LIBS     := $(HDF5_LIBS) -ljpeg -lpng -lyaml -lz -lopenblas -lgomp -lm -lpthread
FUZZ_NAMES    := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS     := $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_NAMES))
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_ENV      := LSAN_OPTIONS=suppressions=tests/fuzz/lsan.supp

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(FUZZ_BUILD)/obj/trainer/checkpoint.o: $(VERSION_H)

$(FUZZ_BUILD)/libccvit_fuzz.a: $(FUZZ_LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libccvit_fuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libccvit_fuzz.a $(FUZZ_LIBS)

fuzz-build: $(FUZZ_BINS)

# The HDF5 seeds (a tiny checkpoint and tokenizer) and regress/tokenizer/huge_k.h5, written by the library.
fuzz-h5-seeds: $(FUZZ_BUILD)/libccvit_fuzz.a
	mkdir -p tests/fuzz/corpus/checkpoint tests/fuzz/corpus/tokenizer tests/fuzz/regress/tokenizer
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -o $(FUZZ_BUILD)/gen_h5_seeds tests/fuzz/gen_h5_seeds.c \
	  $(FUZZ_BUILD)/libccvit_fuzz.a $(FUZZ_LIBS)
	$(FUZZ_BUILD)/gen_h5_seeds tests/fuzz

# Every corpus and regression file once through its harness (seconds); a crash, leak
# or sanitizer report fails it.
fuzz-replay: $(FUZZ_BINS)
	@for n in $(FUZZ_NAMES); do \
	  files=$$(find tests/fuzz/corpus/$$n tests/fuzz/regress/$$n -type f 2>/dev/null | sort); \
	  test -n "$$files" || { echo "fuzz-replay: no corpus for $$n"; exit 1; }; \
	  $(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$n $$files > $(FUZZ_BUILD)/replay_$$n.log 2>&1 \
	    || { tail -n 60 $(FUZZ_BUILD)/replay_$$n.log; echo "fuzz-replay: $$n FAILED (log: $(FUZZ_BUILD)/replay_$$n.log)"; exit 1; }; \
	  echo "fuzz-replay: $$n: $$(echo $$files | wc -w) inputs ok"; \
	done

# FUZZ_SECONDS per harness, one worker, one after the other; `make fuzz FUZZ_NAMES=tar` runs one.
# config gets 4 GB of RSS, not libFuzzer's 2: its corpus holds patterns that legitimately
# expand to the 64 MiB cap of shard names (330 MB each under ASan), and ASan's quarantine
# and size-class caches keep what they freed, so loading the corpus alone passed 2 GB.
fuzz: $(FUZZ_BINS)
	@status=0; for n in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$n $(FUZZ_BUILD)/artifacts/$$n; \
	  dict=; test -f tests/fuzz/$$n.dict && dict=-dict=tests/fuzz/$$n.dict; \
	  rss=; test $$n = config && rss=-rss_limit_mb=4096; \
	  echo "== fuzz_$$n for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$n $(FUZZ_BUILD)/corpus/$$n tests/fuzz/corpus/$$n $$dict -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=20 -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$n/ $$rss $(FUZZ_FLAGS) > $(FUZZ_BUILD)/fuzz_$$n.log 2>&1; \
	  rc=$$?; grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|ERROR|SUMMARY|artifact' $(FUZZ_BUILD)/fuzz_$$n.log; \
	  test $$rc -eq 0 || { echo "fuzz_$$n: FINDING, see $(FUZZ_BUILD)/fuzz_$$n.log and $(FUZZ_BUILD)/artifacts/$$n/"; status=1; }; \
	done; exit $$status

.PHONY: fuzz fuzz-build fuzz-replay fuzz-h5-seeds

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
