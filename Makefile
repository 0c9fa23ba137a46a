# siam_tracker_ros: setup, tests, the demo and the offline evaluation.
#   make setup [ROS_EXTRA=../shared/ros-extra]   .venv + ROS 2 wheels + colcon build
#   make test                                    the whole test suite
#   make demo                                    video -> tracker node -> recorder, summary
#   make eval                                    siam-eval on ../shared/sequences (v2 and v3)
SHELL := /bin/bash
ROS_EXTRA ?=
SHARED ?= ../shared
RUN := tools/ros_env.sh
# Machines without internet fetch the default model from a local mirror: ../shared when present.
SIAM_MODEL_MIRROR ?= $(if $(wildcard $(SHARED)/reference-models),$(abspath $(SHARED)/reference-models),)
export SIAM_MODEL_MIRROR
OUT ?= out

.PHONY: setup test demo eval bench clean

setup:
	bash tools/setup_venv.sh $(ROS_EXTRA)

test:
	$(RUN) python -m pytest siam_tracker_ros/test -q -rs

demo:
	mkdir -p $(OUT)
	$(RUN) siam-demo --generate --json $(OUT)/demo.json

eval:
	mkdir -p $(OUT)
	$(RUN) siam-eval --model $(SHARED)/reference-models/nanotrack-v2 \
	  --sequences $(SHARED)/sequences --peers opencv-nano,opencv-csrt,opencv-kcf,opencv-mil \
	  --peer-model $(SHARED)/reference-models/nanotrack-v2 --json $(OUT)/eval-v2.json \
	  --plots $(OUT)/plots-v2
	$(RUN) siam-eval --model $(SHARED)/reference-models/nanotrack-v3 \
	  --sequences $(SHARED)/sequences --json $(OUT)/eval-v3.json --plots $(OUT)/plots-v3

bench:
	mkdir -p $(OUT)
	$(RUN) siam-bench --model $(SHARED)/reference-models/nanotrack-v3 --json $(OUT)/bench.json

clean:
	rm -rf build install log $(OUT)
