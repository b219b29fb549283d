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
