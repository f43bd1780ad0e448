"""data_pipeline.synth.diversity: the streamed tally against counts done by hand."""

from data_pipeline.synth import diversity, topics


def textbook(text, index):
  return {"text": text, "meta": {"topic": topics.draw_textbook(0, index)}}


def exercise(name, index):
  topic = topics.draw_exercise(0, index)
  return {"meta": {"topic": topic, "function": name or topic["function_name"]}}


def test_textbook_tally_counts_openings_topics_and_gates():
  tally = diversity.Tally("textbooks", requests=6)
  texts = ["## In this section, we will learn loops.", "In this section we will see sets",
           "**Sorting** is everywhere: ..."]
  for i, text in enumerate(texts):
    tally.accepted(textbook(text, i))
  for gate in ("duplicate", "syntax", "duplicate"):
    tally.rejected(gate)
  report = tally.report()
  assert report["accepted"] == 3 and report["rejected"] == 3
  assert report["acceptance_rate"] == 0.5
  assert report["rejected_by_gate"] == {"duplicate": 2, "syntax": 1}
  assert report["near_duplicate_rate"] == round(2 / 5, 4)  # of the 5 that reached dedup
  assert report["openings"] == [("in this section we will", 2), ("sorting is everywhere", 1)]
  assert report["distinct_openings"] == 2
  concepts = {topics.draw_textbook(0, i)["concept"] for i in range(3)}
  assert report["topics"]["concept"]["covered"] == len(concepts)
  assert report["topics"]["concept"]["of"] == len(topics.PYTHON_CONCEPTS)
  assert report["topic_space_size"] == topics.space_size("textbooks")


def test_exercise_tally_counts_names_and_whether_the_asked_name_was_used():
  tally = diversity.Tally("exercises", requests=4)
  for i, name in enumerate([None, None, "solve", "solve"]):
    tally.accepted(exercise(name, i))
  report = tally.report()
  assert report["function_names"][0] == ("solve", 2)
  assert report["asked_name_used"] == 0.5 and report["near_duplicate_rate"] == 0.0
  concepts = {c for i in range(4) for c in topics.draw_exercise(0, i)["concepts"]}
  assert report["topics"]["concepts"]["covered"] == len(concepts)
  markdown = diversity.markdown({"teacher": "t", "seed": 0,
                                 "generators": {"exercises": report}})
  assert "## exercises" in markdown and "`solve`: 2" in markdown
  assert "only as good as the teacher" in markdown
