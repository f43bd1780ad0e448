"""The run report's parts: blocks and their rendering (blocks.py), plots (plots.py), and
one module per section that reads what its stage wrote (data.py, synthetic.py,
decontamination.py, samples.py). recipe/report.py assembles them."""
