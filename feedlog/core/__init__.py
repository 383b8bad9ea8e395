"""The pure core of feedlog: codecs, validation and protocol state machines.

Nothing in this package performs IO, reads a clock, or draws randomness of its own:
time, seeds and ephemeral keys are arguments. tests/test_layering.py enforces it.
"""
