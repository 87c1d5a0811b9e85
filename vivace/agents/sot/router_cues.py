"""The router's lexical cues: question forms whose answers are not a list of independent points.

Why cues before the classifier: these forms are recognisable from their words
(an imperative to write a letter, numbers with an operator, "how many", a
yes/no opening), and a wrong SoT route costs more than a wrong normal one. SoT
on a writing task breaks the text's flow, on math or code it breaks the
dependent steps, and on a short answer it pays a skeleton call for nothing;
normal decoding on a list-shaped question costs only the speedup. So each cue
is written to fire on a whole class of phrasings, erring toward normal, and
the questions no cue catches go to the embedding classifier.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

_I = re.IGNORECASE

# Things a writing task produces. A request for one of these is judged on its form, not its points.
_ARTEFACTS = (
    r"poems?|haikus?|limericks?|sonnets?|verses?|ballads?|odes?|songs?|lyrics|raps?|jingles?|lullab(y|ies)|"
    r"stor(y|ies)|tales?|fables?|fairy tales?|novels?|chapters?|scenes?|screenplays?|scripts?|dialogues?|monologues?|"
    r"e-?mails?|letters?|cover letters?|notes?|memos?|messages?|texts?|invitations?|announcements?|"
    r"press releases?|newsletters?|posts?|blog( posts?)?|articles?|essays?|op-eds?|editorials?|reviews?|"
    r"bios?|biograph(y|ies)|profiles?|r[ée]sum[ée]s?|cvs?|personal statements?|(press|public) statements?|"
    r"summar(y|ies)|abstracts?|speech(es)?|toasts?|eulog(y|ies)|tributes?|vows|pitch(es)?|proposals?|ads?|adverts?|"
    r"advertisements?|commercials?|slogans?|taglines?|captions?|headlines?|titles?|names?|tweets?|threads?|"
    r"descriptions?|listings?|job (posting|ad)s?|recipes?|jokes?|greeting cards?|thank[- ]you( notes?)?|"
    r"apolog(y|ies)|complaints?|references?|obituar(y|ies)|outlines?|agendas?|reports?|paragraphs?|sentences?|"
    r"introductions?|intros?"
)
_WRITE_VERBS = (
    r"write|rewrite|re-write|draft|compose|pen|craft|create|prepare|produce|generate|make (me|us)|give me|"
    r"come up with|put together|structure|format|edit|proofread|polish|tell me|help me( write| with)?|"
    r"(i|we) (need|want|would like|'d like)"
)
# Names that are also English words count only when capitalised: "React", not "react to stress".
_CASED = r"(?-i:\b(React|Angular|Vue|Django|Flask|Rust|Ruby|Swift|Go|Java|R|C)\b)"
_COMPARATIVES = r"older|younger|taller|shorter|heavier|lighter|faster|slower|bigger|smaller"
_AUX = r"is|are|was|were|does|do|did|has|have|had|should|shall|am|isn't|aren't|doesn't|don't|didn't|shouldn't"
_LIST_NOUNS = (
    r"tips|advice|ideas|suggestions|ways|recommendations|examples|reasons|benefits|advantages|disadvantages|pros|"
    r"cons|list"
)

# (name, pattern): the first that matches names the route's reason.
CUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "coding",
        re.compile(
            r"```|\bdef \w+\(|\w+\([^)]*\)\s*[{:]|=>|</?\w+>|\b\w+(Error|Exception)\b|"
            r"\.(py|js|ts|tsx|jsx|java|cpp|cs|go|rs|rb|php|html|css|json|ya?ml|sh|sql|csv|txt|md)\b|"
            r"\b(code|coding|coder|programming|programs? (that|to|which|in|for (finding|checking|counting))|"
            r"scripts? (that|to|which)|(a|this|my|the|recursive) function(?! of)|functions? in|"
            r"algorithms?|data structures?|linked lists?|binary (trees?|search)|hash ?(maps?|tables?)|arrays?|"
            r"list comprehensions?|recursion|recursive(ly)?|regex(es)?|regular expressions?|compilers?|"
            r"compil(e|ation) errors?|debug(ging)?|refactor(ing)?|stack ?traces?|syntax|APIs?|endpoints?|"
            r"unit tests?|git|github|docker(file)?|kubernetes|databases?|sql|mysql|postgres(ql)?|sqlite|json|yaml|"
            r"http|pandas|numpy|node\.?js|npm|pip|virtual ?env(ironment)?|python|javascript|typescript|c\+\+|c#|"
            r"golang|php|perl|bash|shell (script|command|one-liner)s?|one-liner|powershell|html|css|kotlin|scala|"
            r"haskell|matlab|time complexity|big-?o|frontend|backend|web ?apps?)\b|"
            r"\bimplement\b[^.?!]*\b(stack|queue|heap|tree|list|cache|sort|search|parser|class|method|interface)s?\b|"
            + _CASED,
            _I,
        ),
    ),
    (
        "math",
        re.compile(
            r"\d\s*[+*/^=×÷<>]\s*\(?\d|\d\s+-\s+\d|\d\s*%|\b\d+\s*(x|times|plus|minus|divided by)\s*\d|"
            r"(^|[\s(])\d*[a-z]\s*[-+*/^=]\s*\(?\d|\b[a-z]\([a-z0-9]\)|"
            r"\b(solve (for|the|this|\d)|solve:|equations?|inequalit(y|ies)|calculate|compute|integral|integrate|"
            r"derivatives?|differentiate|probability|prove that|theorem|square root|cube root|percent(age)?|"
            r"sum of|average speed|compound interest|simplify (the )?(expression|fraction|\(|\d)|factori[sz]e|"
            r"factor (the|this)|remainder|divisible|fractions?|decimals?|greatest common|least common|lcm|gcd|"
            r"factorial|median|mean of|hypotenuse|perimeter|area of|volume of|diagonals?|slope of|convert \d+|"
            r"x squared|exponents?|logarithms?|expected value|power of|plus|minus|multiplied by|divided by|"
            r"(twice|half|\w+ times) as (many|much|old))\b|"
            r"\d+[^\d?]+\d+[^?]*\b(how (many|much|long|far|old|fast)|total|left|remain|cost|price|earn|pay|speed|"
            r"per|each|ratio|split|what is|what's|find)\b|"
            r"\b(how (many|much|long|far|old|fast)|what is|what's|find)\b[^?]*\d+[^\d?]+\d+",
            _I,
        ),
    ),
    (
        "step-by-step reasoning",
        re.compile(
            r"\b(step[- ]by[- ]step|think (it |this )?through|reason (carefully|it out|through)|explain your reasoning|"
            r"walk me through (your|the) (reasoning|logic|solution|calculation)|riddles?|puzzles?|brain ?teasers?|"
            r"logic (puzzle|problem|question)s?|logically|syllogisms?|(argument|reasoning) (is )?valid|"
            r"is (this|the following) (argument|reasoning)|can we conclude|does it follow|must (some|all|any)|"
            r"comes next|next (number|letter|term)|(in|of) the (sequence|series)|missing (number|letter|term)|"
            r"true or false|what (place|position) (are|am|is)|how is \w+ related to|what day (will|was|is) it)\b|"
            rf"\b(which|who) (weighs|is) (more|less|{_COMPARATIVES})\b|\bwho is (the )?(oldest|youngest|tallest|shortest)\b|"
            rf"\b({_COMPARATIVES}) than\b.*\b({_COMPARATIVES}|oldest|youngest|tallest|shortest)\b",
            _I,
        ),
    ),
    (
        "estimate",
        re.compile(
            r"\b(estimate|estimation|roughly|approximately|approximate|ballpark|back[- ]of[- ](the[- ])?envelope|"
            r"order of magnitude|fermi|rough (guess|figure|number|idea))\b|"
            r"(^|[.!?:]\s+)\W*((about|roughly|so|and|but|ok|okay|hey),?\s+)?how (many|much|long|far|big|heavy|tall|"
            r"old|fast|often|large|deep|high|wide)\b",
            _I,
        ),
    ),
    (
        "writing",
        re.compile(
            rf"\b({_WRITE_VERBS})\b[^.?!]{{0,60}}?\b({_ARTEFACTS})\b|"
            rf"^\W*((a|an|my|our|the)\s+)?((short|brief|funny|formal|catchy|professional|friendly|polite)\s+)?"
            rf"({_ARTEFACTS})\s+(about|for|to|on)\b|"
            r"^\W*(please\s+)?((can|could|would|will) you\s+(please\s+)?)?"
            r"(write|translate|paraphrase|rephrase|reword|proofread|rewrite|summari[sz]e (this|the following|the text))\b|"
            r"\btranslate\b|\bhow do (you|i) say\b|\bwrite (about|something|me)\b",
            _I,
        ),
    ),
    (
        "short answer",
        re.compile(
            r"\b(in (one|a single|two|a few|one or two) (sentences?|words?|lines?)|one[- ]word|yes or no|briefly|"
            r"in brief|short answer|tl;?dr|in a nutshell|define|definition of|stand for|synonyms? (of|for)|"
            r"antonyms? (of|for)|opposite of|meaning of the word|how do you spell)\b",
            _I,
        ),
    ),
    (
        "yes/no question",
        # An auxiliary opening the last sentence, unless it is a polite request ("can you ...") or asks for a list.
        re.compile(
            rf"(^|[.!?]\s+)(({_AUX})\s+|(can|could|will|would|won't|wouldn't|can't)\s+(?!(you|u)\b))"
            rf"(?![^.!?]*\b({_LIST_NOUNS})\b)[^.!?]*\??\s*$",
            _I,
        ),
    ),
)


def cue(question: str) -> str | None:
    """The name of the first normal-decoding cue in ``question``, if any."""
    for name, pattern in CUES:
        if pattern.search(question):
            return name
    return None
