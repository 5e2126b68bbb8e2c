"""Command-line options shared by the user commands and ``vidface eval``."""

from __future__ import annotations

import typer

DeviceOption = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N")
DetectorOption = typer.Option(None, "--detector", help="detector weights (.safetensors); default weights/yolov8n-face")
EmbedderOption = typer.Option(None, "--embedder",
                              help="embedder weights (.safetensors + .json); default weights/effb0-arcface")
FlipOption = typer.Option(True, "--flip-embed/--no-flip-embed",
                          help="embed each face and its mirror image (steadier names, embedding twice the work)")
CloseupsOption = typer.Option(True, "--closeups/--no-closeups",
                              help="also look for faces that fill much of the frame (a second, small detector pass)")
DetConfOption = typer.Option(None, "--det-conf", min=0.0, max=1.0,
                             help="minimum face score (default: the threshold calibrated for the detector)")
