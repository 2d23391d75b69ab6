"""The token-importance methods by name, importable without torch (the CLI lists them in its help).

>>> METHODS
('integrated_gradients', 'gradient_x_input', 'rollout')
"""

from __future__ import annotations

from typing import Literal

Method = Literal["integrated_gradients", "gradient_x_input", "rollout"]
METHODS: tuple[str, ...] = ("integrated_gradients", "gradient_x_input", "rollout")
