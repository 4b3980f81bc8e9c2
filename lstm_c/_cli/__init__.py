"""The command line, ``python -m lstm_c {info,demo,bench}``: nothing here is imported by ``lstm_c``.

main.py parses the arguments and runs a command; info.py, demo.py and
quickbench.py are the commands; peers.py builds what the benchmarks compare
(lstm_c, its NumPy reference, PyTorch, ONNX Runtime) and is shared with the
full suite in bench/.
"""
