"""Evaluation for the phi-1 recipe: the execution sandbox, pass@k, the HumanEval and
MBPP benchmarks, and LLM grading of open problems.
"""
