# umdq: one build for everything.
#
#   make               build daemon, worker, CLI, libumd, tests and benchmarks
#   make run           install what is missing, build, start a local daemon + workers, run the quickstart
#   make test          install what is missing, build, run every test (ends with "N passed, N failed")
#   make check-long    soak, chaos and fuzz runs (minutes)
#   make gpu-check     build for sm_90 and run the GPU parity tests and benchmark (needs a GPU)
#   make bench         run the benchmarks under bench/ (each prints a ratio against its baseline)
#   make install PREFIX=/usr/local
#   make SANITIZE=1    build with AddressSanitizer + UBSan into build-san/ (make test SANITIZE=1)

PREFIX   ?= /usr/local
CC       ?= cc
ifeq ($(origin CC),default)
CC       := cc
endif

ifeq ($(SANITIZE),1)
BUILD    ?= build-san
OPT      := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
SANLD    := -fsanitize=address,undefined
else
BUILD    ?= build
OPT      := -O2 -g
SANLD    :=
endif

# ---- what the machine has ----------------------------------------------------------------------
NVCC     ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_HOME ?= $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),)
HAVE_CUDA := $(if $(NVCC),1,0)
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null)
HAVE_BLAS   := $(if $(BLAS_LIBS),1,0)
HAVE_OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1 || echo 0)

ifneq ($(MAKE_RESTARTS),)
else ifneq ($(UMDQ_SUBMAKE),)
else ifeq ($(filter clean deps,$(MAKECMDGOALS)),)
$(info umdq build: CUDA $(if $(filter 1,$(HAVE_CUDA)),yes ($(NVCC)),no) | BLAS $(if $(filter 1,$(HAVE_BLAS)),OpenBLAS,missing (run scripts/deps.sh)) | OpenMP $(if $(filter 1,$(HAVE_OPENMP)),yes,no) | $(BUILD)/)
endif

CPPFLAGS := -D_GNU_SOURCE -Icommon -Ikernels -Itrainer -Idaemon -Iworker -Icli $(BLAS_CFLAGS) \
            -DUMDQ_HAVE_CUDA=$(HAVE_CUDA)
CFLAGS   := -std=c11 $(OPT) -Wall -Wextra -Werror -MMD -MP -pthread
ifeq ($(HAVE_OPENMP),1)
CFLAGS   += -fopenmp
OMPLD    := -fopenmp
endif
# the trainer's CPU kernels are the hot path: build them for the machine they run on
KFLAGS   := -O3 -march=native -ffp-contract=fast
ifeq ($(SANITIZE),1)
KFLAGS   := -O1 -march=native
endif
LDLIBS   := -lsqlite3 -lzmq -lcjson -lcurl -lmicrohttpd $(BLAS_LIBS) -lpng -lz -lm -pthread $(OMPLD) $(SANLD)

# ---- the CUDA backend (kernels/cuda/*.cu), built whenever nvcc is found -------------------------
# CUDA_ARCH=sm_90 (Hopper) by default: SASS for it plus its PTX, which newer GPUs JIT-compile.
# It is a shared object, lib/umdq/libumd_cuda.so beside bin/, that libumd opens only when a run
# asks for the GPU (kernels/cuda/loader.c), so no program links cuBLAS: the worker forks an attempt
# per job, and a process with cuBLAS mapped forks tens of times slower. Inside the object the CUDA
# runtime is static and every symbol but its one entry point is hidden; cuBLAS is the toolkit's
# shared library (found through the object's rpath, or LD_LIBRARY_PATH where it is copied).
CUDA_ARCH ?= sm_90
CUDA_CC   := $(patsubst sm_%,%,$(CUDA_ARCH))
NVCCFLAGS := -std=c++17 -O3 -lineinfo -gencode arch=compute_$(CUDA_CC),code=sm_$(CUDA_CC) \
             -gencode arch=compute_$(CUDA_CC),code=compute_$(CUDA_CC) --Werror all-warnings \
             -Xcompiler -Wall,-Wextra,-Werror,-fPIC,-fvisibility=hidden
ifeq ($(HAVE_CUDA),1)
CUDA_SRC  := $(wildcard kernels/cuda/*.cu)
CUDA_LIB  := $(BUILD)/lib/umdq/libumd_cuda.so
else
CUDA_SRC  :=
CUDA_LIB  :=
endif

# ---- CUDA kernels run on the CPU (tests/cuemu), wherever the toolkit's headers are ---------------
# Every kernels/cuda/*.cu, its launches rewritten (tests/cuemu/cuemu-src.sh), compiled as host C++
# against the emulator (a fiber per CUDA thread, cuBLAS and the runtime emulated): the CUDA
# backend as $(BUILD)/cuemu/libumd_cuda_emu.so, which test_cuda_ops and test_cuda_model load
# through UMDQ_CUDA_LIB on a machine without a GPU (tests/integration/cuda_emulated.sh); and
# test_cuemu_attention, mma_attention.cu's kernels alone against attention in double.
CXX       ?= g++
# (TUNE_REPS=1: the GEMM tuner's timings say nothing on the emulator; one timed run a candidate)
CUEMU_FLAGS := -std=c++17 -O2 -g -fPIC -fno-strict-aliasing -DUMDQ_CUEMU -D_GNU_SOURCE -DTUNE_REPS=1 \
               -DUMDQ_HAVE_CUDA=1 -Itests/cuemu -Ikernels/cuda -Ikernels -Icommon \
               -I$(CUDA_HOME)/include $(BLAS_CFLAGS) -include tests/cuemu/cuemu.h \
               -Wall -Wextra -Werror -Wno-unused-function -Wno-unknown-pragmas -MMD -MP
CUEMU_RT   := $(patsubst %,$(BUILD)/obj/tests/cuemu/%.o,cuemu cuemu_runtime cuemu_blas)
ifeq ($(HAVE_CUDA)$(HAVE_BLAS),11)
CUEMU_LIB  := $(BUILD)/cuemu/libumd_cuda_emu.so
CUEMU_BINS := $(BUILD)/tests/test_cuemu_attention $(CUEMU_LIB)
else
CUEMU_LIB  :=
CUEMU_BINS :=
endif

# ---- sources -----------------------------------------------------------------------------------
COMMON_SRC  := $(wildcard common/*.c)
KERNEL_SRC  := $(wildcard kernels/cpu/*.c kernels/cuda/*.c)
TRAINER_SRC := $(wildcard trainer/*.c trainer/eval/*.c)
DAEMON_SRC  := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
WORKER_SRC  := $(filter-out worker/main.c,$(wildcard worker/*.c))
CLI_SRC     := $(filter-out cli/main.c,$(wildcard cli/*.c))
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
BENCH_SRC   := $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBCOMMON  := $(BUILD)/lib/libumdqcommon.a
LIBUMD     := $(BUILD)/lib/libumd.a
LIBDAEMON  := $(BUILD)/lib/libumdqd.a
LIBWORKER  := $(BUILD)/lib/libumdqworker.a
LIBCLI     := $(BUILD)/lib/libumdqcli.a

UMDQD      := $(BUILD)/bin/umdqd
WORKER     := $(BUILD)/bin/umdq-worker
UMDQ       := $(BUILD)/bin/umdq
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))


.PHONY: all deps run test check-long gpu-check bench install clean
.SECONDARY:
all: $(UMDQD) $(WORKER) $(UMDQ) $(CUDA_LIB) $(UNIT_BINS) $(BENCH_BINS) $(CUEMU_BINS)

# quiet by default; make V=1 prints whole command lines
ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @echo "  $(1)	$@"
endif

$(BUILD)/obj/kernels/cpu/%.o: kernels/cpu/%.c
	@mkdir -p $(@D)
	$(call say,CC)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(KFLAGS) -c $< -o $@

$(BUILD)/obj/kernels/cuda/%.o: kernels/cuda/%.cu
	@mkdir -p $(@D)
	$(call say,NVCC)
	$(Q)$(NVCC) -D_GNU_SOURCE -Icommon -Ikernels -DUMDQ_HAVE_CUDA=1 $(NVCCFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/cuemu/%.cpp: kernels/cuda/%.cu tests/cuemu/cuemu-src.sh
	@mkdir -p $(@D)
	$(call say,GEN)
	$(Q)tests/cuemu/cuemu-src.sh $< > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/cuemu/%.o: $(BUILD)/cuemu/%.cpp
	@mkdir -p $(@D)
	$(call say,CXX)
	$(Q)$(CXX) $(CUEMU_FLAGS) -c $< -o $@
$(BUILD)/obj/tests/cuemu/%.o: tests/cuemu/%.cpp
	@mkdir -p $(@D)
	$(call say,CXX)
	$(Q)$(CXX) $(CUEMU_FLAGS) -c $< -o $@
CUEMU_KOBJ := $(patsubst kernels/cuda/%.cu,$(BUILD)/obj/cuemu/%.o,$(wildcard kernels/cuda/*.cu))
$(BUILD)/tests/test_cuemu_attention: $(BUILD)/obj/tests/cuemu/test_cuemu_attention.o \
                                     $(CUEMU_RT) $(CUEMU_KOBJ)
	@mkdir -p $(@D)
	$(call say,LD)
	$(Q)$(CXX) $^ $(BLAS_LIBS) -lm -pthread -o $@
$(BUILD)/cuemu/libumd_cuda_emu.so: $(CUEMU_KOBJ) $(CUEMU_RT)
	@mkdir -p $(@D)
	$(call say,LD)
	$(Q)$(CXX) -shared -Wl,--no-undefined $^ $(BLAS_LIBS) -lm -ldl -pthread -o $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

define archive
	@mkdir -p $(@D)
	@rm -f $@
	$(call say,AR)
	$(Q)ar rcs $@ $^
endef

$(LIBCOMMON): $(call obj,$(COMMON_SRC))  ; $(archive)
$(LIBUMD):    $(call obj,$(KERNEL_SRC) $(TRAINER_SRC)) ; $(archive)
$(CUDA_LIB):  $(patsubst %.cu,$(BUILD)/obj/%.o,$(CUDA_SRC))
	@mkdir -p $(@D)
	$(call say,LD)
	$(Q)$(CC) -shared -Wl,--no-undefined -Wl,-z,defs $^ -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 \
	    -lcublas -lcublasLt -lcudart_static -lstdc++ -lm -ldl -lrt -pthread -o $@
# schema/*.sql are compiled into the daemon, so an installed umdqd needs no data files
SCHEMA_SQL := $(sort $(wildcard schema/*.sql))
$(BUILD)/gen/schema_embed.c: $(SCHEMA_SQL) scripts/embed.sh
	@mkdir -p $(@D)
	$(call say,GEN)
	$(Q)scripts/embed.sh umdq_schema_files $(SCHEMA_SQL) > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/gen/schema_embed.o: $(BUILD)/gen/schema_embed.c
	@mkdir -p $(@D)
	$(call say,CC)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# the dashboard (web/) is compiled into the daemon too; umdqd serves only the files named here
WEB_ASSETS := $(sort $(wildcard web/*.html web/*.js web/*.css web/*.svg web/vendor/*.js web/vendor/*.css))
$(BUILD)/gen/web_embed.c: $(WEB_ASSETS) scripts/embed-web.sh
	@mkdir -p $(@D)
	$(call say,GEN)
	$(Q)scripts/embed-web.sh umdq_web_files web $(WEB_ASSETS) > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/gen/web_embed.o: $(BUILD)/gen/web_embed.c
	@mkdir -p $(@D)
	$(call say,CC)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIBDAEMON): $(call obj,$(DAEMON_SRC)) $(BUILD)/obj/gen/schema_embed.o $(BUILD)/obj/gen/web_embed.o ; $(archive)
$(LIBWORKER): $(call obj,$(WORKER_SRC)) ; $(archive)
$(LIBCLI):    $(call obj,$(CLI_SRC))    ; $(archive)

# Each program links only the libraries it needs, most dependent first. A test or benchmark
# names its own in a comment near its top:   /* umdq-uses: daemon common */
# (parts: cli worker daemon umd common; without the line it links all of them).
LIB_cli := $(LIBCLI)
LIB_worker := $(LIBWORKER)
LIB_daemon := $(LIBDAEMON)
LIB_umd := $(LIBUMD)
LIB_common := $(LIBCOMMON)
PARTS := cli worker daemon umd common
uses_of = $(or $(shell sed -n 's/.*umdq-uses: *\([a-z ]*\).*/\1/p' $(1) 2>/dev/null | head -n 1),$(PARTS))
libs_for = $(foreach p,$(PARTS),$(if $(filter $(p),$(call uses_of,$(1))),$(LIB_$(p))))

.SECONDEXPANSION:
LINK = @mkdir -p $(@D) && echo "  LD	$@" && $(CC) $(CFLAGS) $(filter %.o %.a,$^) $(LDLIBS) -o $@

$(UMDQD):  $(call obj,daemon/main.c) $(LIBDAEMON) $(LIBCOMMON)                ; $(LINK)
$(WORKER): $(call obj,worker/main.c) $(LIBWORKER) $(LIBUMD) $(LIBCOMMON)      ; $(LINK)
$(UMDQ):   $(call obj,cli/main.c) $(LIBCLI) $(LIBUMD) $(LIBCOMMON)            ; $(LINK)
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $$(call libs_for,tests/unit/$$*.c) ; $(LINK)
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $$(call libs_for,bench/$$*.c)          ; $(LINK)

# ---- the two commands and friends ---------------------------------------------------------------
deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory UMDQ_SUBMAKE=1 all
	@BUILD=$(BUILD) scripts/run.sh

test: deps
	@scripts/deps.sh --web || echo "umdq: the browser test will be skipped (no chromium, node or npm packages)" >&2
	@$(MAKE) --no-print-directory UMDQ_SUBMAKE=1 all
	@BUILD=$(BUILD) tests/run.sh

check-long: deps
	@$(MAKE) --no-print-directory UMDQ_SUBMAKE=1 all
	@BUILD=$(BUILD) tests/run.sh --long

bench: deps
	@scripts/deps.sh --bench
	@$(MAKE) --no-print-directory UMDQ_SUBMAKE=1 all
	@BUILD=$(BUILD) scripts/bench.sh

gpu-check:
	@BUILD=$(BUILD) scripts/gpu-check.sh

install: $(UMDQD) $(WORKER) $(UMDQ) $(CUDA_LIB)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/umdq/examples \
	           $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/lib/umdq
	install -m 0755 $(UMDQD) $(WORKER) $(UMDQ) $(DESTDIR)$(PREFIX)/bin/
	$(if $(CUDA_LIB),install -m 0755 $(CUDA_LIB) $(DESTDIR)$(PREFIX)/lib/umdq/)
	install -m 0644 examples/*.json $(DESTDIR)$(PREFIX)/share/umdq/examples/
	sed 's|@PREFIX@|$(PREFIX)|g' contrib/systemd/umdqd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/umdqd.service
	sed 's|@PREFIX@|$(PREFIX)|g' contrib/systemd/umdq-worker@.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/umdq-worker@.service

clean:
	rm -rf build build-san

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
