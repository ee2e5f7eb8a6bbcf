"""The help screen: key bindings and what each tab does."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# latentlocal

Steer a local GGUF model in latent space: **Soft Thinking**, **SEAL**, **Soft Reasoning**, against
chain-of-thought baselines.

## Keys

| key | does |
| --- | --- |
| **F2 … F6** | tabs: Models, Run, Compare, Vectors, Settings |
| **Ctrl+R** | start: run the prompt (Run), compare (Compare), extract (Vectors) |
| **Ctrl+O** | pick the method (opens the Run tab's method list) |
| **Esc** | cancel the running generation, comparison or extraction |
| **Ctrl+C** | cancel while something runs; copy when text is selected; otherwise quit |
| **Ctrl+Q** | quit (cancels a run first) |
| **Ctrl+T** | show / hide each soft step's top candidates inside the output |
| **Ctrl+L** | clear the output |
| **F1** or **?** | this help |
| **Tab / Shift+Tab** | move between fields; **Enter** loads the highlighted model |

Cancelling stops at the next token: the model stays loaded and nothing is left half-written (vectors
and settings are written to a temporary file and moved into place).

## Tabs

- **Models**: the bundled SmolLM2-135M, every `.gguf` in your models folder, or any path. Enter loads
  the highlighted row with the GPU offload / context / thread options below the table.
- **Run**: write a prompt, pick a method, change its settings (empty = the method's default; the
  field's help shows at the bottom of the form), Ctrl+R. *Thinking* is grey italic, soft (concept)
  steps are teal, the **answer** is bold. SEAL thought ends are tagged
  execution / reflection / transition (⚑ = steered). Cold Stop is marked when it fires.
- **Compare**: tick methods; each runs with its Run-tab settings, one after another.
- **Vectors**: extract a SEAL vector from a JSONL file (one `{"question": ...}` per line), inspect a
  vector, export it and copy the `llama-cli --control-vector-scaled` line that uses it.
- **Settings**: theme, soft-step candidates, screen update rate. Saved in `config.toml` in your
  config folder, as are the model options, prompt and method settings.

Press **Esc**, **F1** or **q** to close this help.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,f1,q,question_mark", "dismiss", "Close help", priority=True),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP)

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
