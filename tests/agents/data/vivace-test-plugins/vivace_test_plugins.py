"""Test plug-ins in the decorator form: ``shout`` works, ``explode`` fails mid-run."""

from vivace import agent, task_text


@agent("shout", description="Upper-cases its input; makes no model call.")
async def shout(inp, ctx):
    return task_text(inp).upper()


@agent("explode", description="Always fails, to test error propagation.")
async def explode(inp, ctx):
    raise RuntimeError("boom from a plug-in")
