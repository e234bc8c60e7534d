"""The export pipeline shared by every entry point.

- `core`: staged write -> strategy -> verify -> commit, with the reasons of
  every strategy that was skipped or failed;
- `behavior`: stochastic and stateful endpoints, probed on the source backend.
"""
