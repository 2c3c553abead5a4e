from seal.domains.knowledge.sequences import SequenceOptions, build_sequences

CTX = "Kestrel Hall was built in 1701."


def test_lines_title_prefix_and_passage_last():
    seqs = build_sequences("1. A is B\n2. C implies D\n\n", "Kestrel", CTX)
    assert seqs == ["Kestrel\n1. A is B", "Kestrel\n2. C implies D", "Kestrel\n" + CTX]


def test_preamble_before_numbered_list_is_dropped():
    seqs = build_sequences("Sure, here are the implications:\n1. A\n2. B", "T", CTX)
    assert seqs[:2] == ["T\n1. A", "T\n2. B"]


def test_segments_and_options():
    text = "first part\nline two\n---\nsecond part"
    assert build_sequences(text, "T", CTX, SequenceOptions(split="segments", append_passage=False)) == [
        "T\nfirst part\nline two", "T\nsecond part"]
    assert build_sequences(text, "T", CTX, SequenceOptions(split="none", title_prefix=False)) == [text, CTX]


def test_self_qa_keeps_question_with_answer_including_numbered_answers():
    text = "Who built it?\nAnswer 1: Ada\nQuestion 2: When?\nAnswer 2: 1701"
    seqs = build_sequences(text, "T", CTX, family="self-qa")
    assert seqs == ["T\nQuestion 1: Who built it?\nAnswer 1: Ada", "T\nQuestion 2: When?\nAnswer 2: 1701", "T\n" + CTX]


def test_empty_self_edit_gives_the_passage_only():
    assert build_sequences("  \n", "T", CTX) == ["T\n" + CTX]
