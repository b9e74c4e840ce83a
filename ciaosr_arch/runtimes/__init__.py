"""What runs an implicit net's per-query arithmetic: the `DecodeRuntime` protocol and its implementations.

Every net is built with a `TorchRuntime` (`net.runtime`: the net's own PyTorch methods); `ciaosr_arch.runtime.
use_runtime` swaps it for another, as a diffusers pipeline swaps its scheduler. The engine and the archs call
whichever is attached, never asking which.
  - `base`: the protocol, the PyTorch runtime, `attach`, and the decode's query counts;
  - `openvino`: `OpenVINORuntime`, the decode and the cross-scale attention's products on OpenVINO (optional
    install, imported only when used);
  - `int8`: the opt-in int8 decode's calibration and fake quantization (for the OpenVINO runtime).
"""
