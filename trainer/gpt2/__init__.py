"""Everything that reaches into Hugging Face's GPT-2 internals, in one place.

A transformers upgrade that renames a module, a parameter or changes GPT-2's forward breaks this
subpackage and nothing else, and ``tests/trainer/test_gpt2_parity.py`` (one test against HF's own
forward) says so:

- `trainer.gpt2.mirror`: HF's GPT-2 forward op for op, for the greedy decoder's fast paths;
- `trainer.gpt2.fused`: `FusedGPT2`, K GPT-2s as one module with stacked parameters (fused
  training), and `param_names`, the table of GPT-2's parameter names it relies on.

Why our own fused forward and not PyTorch's ensembling (``torch.func.stack_module_state`` +
``functional_call`` + ``vmap`` over HF's forward, which would need no code here): measured with
``benchmarks/bench_gpt2_forward.py`` on the CPU, the vmap route's training step (forward and
backward) took 1.35-1.68x as long as `FusedGPT2`'s (the decision rule was: keep it if within
10 %), see the README's performance table.
"""
