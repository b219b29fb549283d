from sqltune.prompt import build_prompt

RECORD = {
    "question": "How many singers are there?",
    "schema": "singer(id, name, age)\nconcert(id, name, year)\nstadium(id, name, capacity)",
    "evidence": "singers are people who sing",
}


def word_count(text: str) -> int:
    return len(text.split())


def test_alpaca_prompt_holds_schema_evidence_and_question():
    prompt = build_prompt(RECORD)
    assert "stadium(id, name, capacity)" in prompt.text
    assert "Hint: singers are people who sing" in prompt.text
    assert prompt.text.rstrip().endswith("### Response:")
    assert RECORD["question"] in prompt.text
    assert prompt.schema_lines_dropped == 0


def test_over_long_prompt_drops_trailing_schema_lines_never_the_question():
    full = word_count(build_prompt(RECORD).text)
    prompt = build_prompt(RECORD, max_tokens=full - 2, count_tokens=word_count)
    assert prompt.fits and prompt.schema_lines_dropped == 1
    assert "stadium" not in prompt.text and "concert(id" in prompt.text
    assert RECORD["question"] in prompt.text


def test_prompt_that_cannot_fit_keeps_question_and_says_so():
    prompt = build_prompt(RECORD, max_tokens=5, count_tokens=word_count)
    assert not prompt.fits
    assert prompt.schema_lines_dropped == 3
    assert RECORD["question"] in prompt.text


def test_chat_template_uses_the_given_renderer():
    seen = []
    text = build_prompt(RECORD, "chat", chat_render=lambda m: seen.append(m) or "RENDERED").text
    assert text == "RENDERED"
    assert seen[0][0]["role"] == "system" and RECORD["question"] in seen[0][1]["content"]


UNITS = [  # display order; `drop` is the order they go in when the prompt is over budget
    {"kind": "table", "table": "singer", "text": "singer(id, name, country)", "drop": 3},
    {"kind": "values", "table": "singer", "text": "-- values in singer: country = 'France'", "needs": [0], "drop": 1},
    {"kind": "table", "table": "stadium", "text": "stadium(id, name, capacity)", "drop": 2},
    {"kind": "examples", "table": "stadium", "text": "-- examples in stadium: name = 'Hampden'", "needs": [2],
     "drop": 0},
]  # fmt: skip
UNIT_RECORD = {"id": "u1", "question": "How many singers are from France?", "schema_units": UNITS,
               "schema": "\n".join(u["text"] for u in UNITS)}  # fmt: skip


def test_a_record_with_units_loses_whole_units_in_their_drop_order():
    full = word_count(build_prompt(UNIT_RECORD).text)
    assert build_prompt(UNIT_RECORD, max_tokens=full, count_tokens=word_count).left_out == ()
    one = build_prompt(UNIT_RECORD, max_tokens=full - 1, count_tokens=word_count)
    assert one.left_out == ("examples stadium",) and "Hampden" not in one.text and "stadium(id" in one.text
    two = build_prompt(UNIT_RECORD, max_tokens=full - 8, count_tokens=word_count)
    assert two.left_out == ("examples stadium", "values singer") and two.schema_lines_dropped == 2
    assert "singer(id, name, country)\nstadium(id, name, capacity)\n" in two.text
    three = build_prompt(UNIT_RECORD, max_tokens=full - 15, count_tokens=word_count)
    assert three.left_out == ("examples stadium", "values singer", "table stadium")
    assert "Database schema:\nsinger(id, name, country)\n\n" in three.text
    everything = build_prompt(UNIT_RECORD, max_tokens=5, count_tokens=word_count)
    assert not everything.fits and UNIT_RECORD["question"] in everything.text
    assert everything.left_out == ("examples stadium", "values singer", "table stadium", "table singer")


def test_a_table_takes_what_needs_it_along():
    """Dropping a table hides its values too, whatever their own place in the drop order."""
    from sqltune.prompt import hidden_units

    units = [{**u, "drop": {0: 0, 1: 3, 2: 1, 3: 2}[i]} for i, u in enumerate(UNITS)]  # singer first, its values last
    assert hidden_units(units, 1) == {0, 1}
    assert hidden_units(units, 0) == set()
