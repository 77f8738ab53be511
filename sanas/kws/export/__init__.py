"""Export of trained models to ONNX, and an ONNX Runtime backend for streaming."""

INSTALL_HINT = "pip install 'sanas[export]'"
