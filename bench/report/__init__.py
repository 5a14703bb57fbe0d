"""The benchmark page: ``render`` writes docs/benchmarks.md, results.json and the README headline; one module
per part renders its section (``partN(record, image_dir) -> (lines, headline facts)``)."""

from .headline import headline
from .inference import part5
from .page import README_END, README_START, RENDER, TITLES, load_results, render
from .pipeline import part6
from .quality import part1
from .scale import part7
from .serving import part8
from .throughput import part4
from .esmm import part3
from .mmoe import part2

__all__ = ["render", "load_results", "headline", "RENDER", "TITLES", "README_START", "README_END",
           "part1", "part2", "part3", "part4", "part5", "part6", "part7",
           "part8"]
