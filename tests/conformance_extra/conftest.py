"""The calico-lab fixtures (state directory always taken down, services present)."""

from tests.lab.conftest import lab_dir, needs_services

__all__ = ["lab_dir", "needs_services"]
