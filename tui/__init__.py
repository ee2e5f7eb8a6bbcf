"""The latentlocal terminal UI (Textual). Imports the library; the library never imports this."""

from latentlocal.openmp import spin_less

# before llama.cpp loads: the UI's own thread shares the cores with its decoding threads
spin_less()
