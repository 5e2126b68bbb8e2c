"""Evaluation of vidface's models on public benchmarks (WIDER FACE, LFW, videofaceid)."""
