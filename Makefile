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

# The Humble leg: the node, the demo and the tools again with Humble's subscription dispatch
# (message-only callbacks, emulated inside Jazzy's rclpy by test/humble_dispatch) and Humble's
# isolation variable (ROS_DISTRO=humble -> ROS_LOCALHOST_ONLY=1).
HUMBLE_DISPATCH := $(abspath siam_tracker_ros/test/humble_dispatch)
# (test_ros_launch is not in it: it drives Jazzy's own ros2 CLI, whose two-argument callbacks
# need Jazzy's dispatch; Humble's ros2cli has one-argument ones.)
HUMBLE_TESTS := test_humble_dispatch.py test_node_startup.py test_ros_node.py test_ros_demo.py \
	test_node_scripted.py

test:
	$(RUN) python -m pytest siam_tracker_ros/test -q -rs
	@echo '== Humble leg: $(HUMBLE_TESTS) with message-only subscription dispatch'
	ROS_DISTRO=humble SIAM_HUMBLE_LEG=1 PYTHONPATH=$(HUMBLE_DISPATCH)$${PYTHONPATH:+:$$PYTHONPATH} \
	  $(RUN) python -m pytest $(wildcard $(addprefix siam_tracker_ros/test/,$(HUMBLE_TESTS))) -q -rs

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

.PHONY: jetpack-leg jetson-setup

# Python 3.10 + numpy 1.26 / OpenCV 4.8 / onnxruntime 1.17 / onnx 1.16, no ROS, no torch
# (.venv-jetpack); .ci/run runs it after `make test`.
jetpack-leg:
	bash tools/jetpack_leg.sh

# On a Jetson (JetPack 6): .venv with the system site-packages (JetPack's TensorRT and OpenCV),
# requirements-jetson.txt, onnxruntime, the package; checks TensorRT and the CUDA binding.
jetson-setup:
	bash tools/setup_jetson.sh
