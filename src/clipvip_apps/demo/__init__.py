"""``clipvip demo``: a CPU-sized reproduction of the CLIP-ViP ablations in a synthetic video-language world."""

from clipvip_apps.demo.config import DemoConfig, StageConfig
from clipvip_apps.demo.evaluation import evaluate
from clipvip_apps.demo.pipeline import run_demo
from clipvip_apps.demo.report import print_tables

__all__ = ["DemoConfig", "StageConfig", "evaluate", "print_tables", "run_demo"]
