# SCHmUBERT toolkit. `make demo` runs the whole pipeline on the bundled demo corpus; `make test` runs the tests.
PYTHON ?= python3
TRACKS ?= trio
INPUT ?=
OUTPUT ?=
WORKERS ?= 2
DEMO_DIR := data/demo
PROCESSED := data/processed
LMD_DIR ?= data/lmd

CORPUS ?= ../shared/corpus

.PHONY: install fluidsynth preprocess download-lmd demo test lint bench pretrained-trio pretrained-melody melody-long2 gpu-wheels

install:
	$(PYTHON) -m pip install torch==2.13.0 || $(PYTHON) -m pip install "torch>=2.3"
	$(PYTHON) -m pip install -e ".[dev,audio,magenta]"
	@$(MAKE) --no-print-directory fluidsynth

# Optional: the FluidSynth library for WAV rendering of samples (Debian/Ubuntu, as root); skipped otherwise.
fluidsynth:
	@command -v fluidsynth >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -q fluidsynth >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fluidsynth >/dev/null 2>&1))) || \
		echo "note: FluidSynth not installed; samples are written without WAV audio"

# With no INPUT: the bundled demo corpus, trio and melody, into data/processed/demo-{trio,melody}.
preprocess:
ifeq ($(INPUT),)
	$(PYTHON) -m preprocessing --tracks trio --input $(DEMO_DIR)/lakh-trio --output $(PROCESSED)/demo-trio --workers $(WORKERS) --valid-fraction 0.1 --overwrite
	$(PYTHON) -m preprocessing --tracks melody --input $(DEMO_DIR)/lakh-melody --output $(PROCESSED)/demo-melody --workers $(WORKERS) --valid-fraction 0.1 --overwrite
else
	$(PYTHON) -m preprocessing --tracks $(TRACKS) --input $(INPUT) --output $(or $(OUTPUT),$(PROCESSED)/$(TRACKS)) --workers $(WORKERS)
endif

download-lmd:
	$(PYTHON) -m preprocessing.download --output $(LMD_DIR)

demo: preprocess
	$(PYTHON) -m schmubert.demo

# Reproduce a shipped model (docs/models/*.md): the Lakh windows of the corpus, the recipe, the export into the
# package (replacing the shipped weights: review with git diff). Stages: the plain conv (cpu-$*), bar
# attention added to it (cpu-$*-bars), span masking (cpu-$*-spans); then attributes in bf16: the trio in two
# runs (cpu-trio-attrs, then cpu-trio-attrs2 with every subset of them equally often), the melody in one
# (cpu-melody-attrs); the trio's stage 6 against overfitting (cpu-trio-roll: windows rotated by whole bars,
# dropout 0.2), stages 7 and 8, more of it at batch 16 (cpu-trio-long, cpu-trio-long2); the melody's stage 5,
# windows rotated by whole bars at batch 32 (cpu-melody-long), and its stage 6 from that one's export in the
# eight parts of make melody-long2. About 70 + 60 + 25 + (55 + 70 + 43 + 96 + 122 | 44 + 84 + 306-336) min on 2
# CPU cores (stage 6 in bf16 on AVX512-BF16 ones). The export ships each model's decoding defaults, chosen by
# measurement (experiments/README.md): outlines for new pieces (--outline auto) for both, the trio's guidance
# scale 1.5 (the melody's is the sampler's 2).
pretrained-trio pretrained-melody: pretrained-%:
	$(PYTHON) -m preprocessing --tracks $* --input $(CORPUS)/lakh-$*-64bar --output $(PROCESSED)/lakh-$* --workers $(WORKERS) --valid-fraction 0.05 --overwrite
	$(PYTHON) -m schmubert.train --recipe cpu-$* --data $(PROCESSED)/lakh-$* --name cpu-$*-repro
	$(PYTHON) -m schmubert.train --recipe cpu-$*-bars --data $(PROCESSED)/lakh-$* --name cpu-$*-bars-repro --init runs/cpu-$*-repro/checkpoints/last.ckpt
	$(PYTHON) -m schmubert.train --recipe cpu-$*-spans --data $(PROCESSED)/lakh-$* --name cpu-$*-spans-repro --init runs/cpu-$*-bars-repro/checkpoints/last.ckpt
	$(if $(filter trio,$*),$(PYTHON) -m schmubert.train --recipe cpu-trio-attrs --data $(PROCESSED)/lakh-trio --name cpu-trio-attrs-repro --init runs/cpu-trio-spans-repro/checkpoints/last.ckpt)
	$(if $(filter trio,$*),$(PYTHON) -m schmubert.train --recipe cpu-trio-attrs2 --data $(PROCESSED)/lakh-trio --name cpu-trio-attrs2-repro --init runs/cpu-trio-attrs-repro/checkpoints/last.ckpt)
	$(if $(filter melody,$*),$(PYTHON) -m schmubert.train --recipe cpu-melody-attrs --data $(PROCESSED)/lakh-melody --name cpu-melody-attrs-repro --init runs/cpu-melody-spans-repro/checkpoints/last.ckpt)
	$(if $(filter melody,$*),$(PYTHON) -m schmubert.train --recipe cpu-melody-long --data $(PROCESSED)/lakh-melody --name cpu-melody-long-repro --init runs/cpu-melody-attrs-repro/checkpoints/last.ckpt)
	$(if $(filter trio,$*),$(PYTHON) -m schmubert.train --recipe cpu-trio-roll --data $(PROCESSED)/lakh-trio --name cpu-trio-roll-repro --init runs/cpu-trio-attrs2-repro/checkpoints/last.ckpt)
	$(if $(filter trio,$*),$(PYTHON) -m schmubert.train --recipe cpu-trio-long --data $(PROCESSED)/lakh-trio --name cpu-trio-long-repro --init runs/cpu-trio-roll-repro/checkpoints/last.ckpt)
	$(if $(filter trio,$*),$(PYTHON) -m schmubert.train --recipe cpu-trio-long2 --data $(PROCESSED)/lakh-trio --name cpu-trio-long2-repro --init runs/cpu-trio-long-repro/checkpoints/last.ckpt)
	$(if $(filter melody,$*),$(PYTHON) -m schmubert.pretrained export --checkpoint runs/cpu-melody-long-repro/checkpoints/last.ckpt --name melody --heldout $(PROCESSED)/lakh-melody/valid.npy --directory runs/cpu-melody-long-repro/export)
	$(if $(filter melody,$*),$(MAKE) melody-long2)
	$(PYTHON) -m schmubert.pretrained export --checkpoint runs/$(if $(filter trio,$*),cpu-trio-long2-repro,melody-long2-repro-13700)/checkpoints/last.ckpt --name $* --heldout $(PROCESSED)/lakh-$*/valid.npy --overwrite --outline auto $(if $(filter trio,$*),--cfg-scale 1.5 --repair-steps 4,--repair 1)

# The melody's stage 6 as it was trained (experiments/README.md, "The melody's stage 6 in parts"): melody-long2
# from MELODY_LONG2_INIT, stage 5 (make pretrained-melody exports it there first; or stage 5 as it shipped:
# git show 0b67bf5:schmubert/weights/melody.safetensors > stage5.safetensors, MELODY_LONG2_INIT=stage5.safetensors)
# in parts that stop at the steps of MELODY_LONG2_PARTS, each continued from the last one's export (fresh Adam
# moments, re-warmed), each exported to runs/melody-long2-repro/part-STEP (the last is the shipped stage again,
# not bit for bit: parts 1-5 ran in fp32, 6-8 in bf16). About 5.1-5.6 h of training in bf16 on 2 AVX512-BF16
# cores (0.68-0.75 steps per second), 10 to 19 h in fp32 on 2 AVX2-only ones (0.20-0.39), and about 4 min per
# export (estimates from the parts' speeds).
MELODY_LONG2_PARTS := 1400 2800 4200 5600 7000 9800 11200 13700
MELODY_LONG2_INIT ?= runs/cpu-melody-long-repro/export/melody.safetensors
melody-long2:
	start=0; init=$(MELODY_LONG2_INIT); for stop in $(MELODY_LONG2_PARTS); do \
		$(PYTHON) -m schmubert.train --recipe melody-long2 --data $(PROCESSED)/lakh-melody --name melody-long2-repro-$$stop --init $$init --start-step $$start --stop-step $$stop && \
		$(PYTHON) -m schmubert.pretrained export --checkpoint runs/melody-long2-repro-$$stop/checkpoints/last.ckpt --name melody --heldout $(PROCESSED)/lakh-melody/valid.npy --directory runs/melody-long2-repro/part-$$stop || exit 1; \
		init=runs/melody-long2-repro/part-$$stop/melody.safetensors; start=$$stop; done

# The wheels experiments/gpu_check.sh and gpu_train.sh install on a lent GPU machine, whose image lacks them
# (Python 3.12).
gpu-wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl pretty_midi==0.2.11.post0 mido==1.3.3 symusic==0.6.0 \
		pySmartDL==1.3.4 six importlib_resources platformdirs

test:
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check schmubert preprocessing experiments tests

bench:
	$(PYTHON) experiments/bench_preprocess.py
	$(PYTHON) experiments/bench_train.py
	$(PYTHON) experiments/bench_sample.py
	$(PYTHON) experiments/bench_selfsim.py
