"""The CLI's commands, by family; `cupy_getp.cli` registers them on one typer app and runs it."""
