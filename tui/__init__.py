"""The latentlocal terminal UI (Textual). Imports the library; the library never imports this."""
