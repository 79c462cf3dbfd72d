// Fuzz target for the XAPPLEPUSHSERVICE argument parser (plugin/xaps-request).
//
// The input is read as the arguments of the command in IMAP syntax, the way
// Dovecot's imap parser would have split them: atoms, "quoted" strings with
// backslash escapes, {N} literals, NIL and (nested) lists. So the seed corpus
// reads like what iOS sends, and the fuzzer's mutations of quotes and
// parentheses decide which argument is a string, a list or NIL. Reading the
// input never fails: whatever the bytes, the parser gets some arguments.
//
// Every input is parsed under three policies: with a stand-in modified UTF-7
// decoder, without a decoder, and with no accepted subtopic. Invariants:
// whatever is accepted is bounded, well-formed and is what the client sent;
// every refusal carries a short fixed message; and the policies agree.
#include "fuzz-invariant.h"
#include "xaps-request.h"

#include "registration.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace {

using xaps::plugin::ApsRequest;
using xaps::plugin::ParsedRequest;
using xaps::plugin::RequestArg;
using xaps::plugin::RequestError;
using xaps::plugin::RequestMailbox;
using xaps::plugin::RequestPolicy;

// Dovecot's imap parser refuses deeper nesting too; it also keeps the
// recursive destruction of RequestArg within the stack.
constexpr std::size_t max_list_depth = 16;
constexpr std::size_t max_literal_digits = 6;

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

char to_lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equals_ignore_case(std::string_view a, std::string_view b) {
    return std::ranges::equal(a, b, [](char x, char y) { return to_lower(x) == to_lower(y); });
}

// Reads IMAP-like argument syntax leniently into RequestArgs.
class ArgumentReader {
public:
    explicit ArgumentReader(std::string_view input) : input_(input) {}

    std::vector<RequestArg> read_all() {
        std::vector<std::vector<RequestArg>> open_lists(1);
        while (skip_spaces()) {
            char c = input_[pos_];
            if (c == '(') {
                pos_++;
                if (open_lists.size() <= max_list_depth) {
                    open_lists.emplace_back();
                } // deeper lists are flattened into the deepest one
            } else if (c == ')') {
                pos_++;
                if (open_lists.size() > 1) {
                    close_list(open_lists);
                } // a stray ')' at the top level is dropped
            } else {
                open_lists.back().push_back(read_scalar());
            }
        }
        while (open_lists.size() > 1) {
            close_list(open_lists); // unclosed lists end with the input
        }
        return std::move(open_lists.front());
    }

private:
    static void close_list(std::vector<std::vector<RequestArg>> &open_lists) {
        RequestArg list = RequestArg::list(std::move(open_lists.back()));
        open_lists.pop_back();
        open_lists.back().push_back(std::move(list));
    }

    bool skip_spaces() {
        while (pos_ < input_.size() && is_space(input_[pos_])) {
            pos_++;
        }
        return pos_ < input_.size();
    }

    RequestArg read_scalar() {
        if (input_[pos_] == '"') {
            return RequestArg::string(read_quoted());
        }
        if (auto literal = read_literal()) {
            return RequestArg::string(std::move(*literal));
        }
        std::string atom = read_atom();
        if (equals_ignore_case(atom, "NIL")) {
            return RequestArg::nil();
        }
        return RequestArg::string(std::move(atom));
    }

    std::string read_quoted() {
        std::string text;
        pos_++; // the opening quote
        while (pos_ < input_.size() && input_[pos_] != '"') {
            if (input_[pos_] == '\\' && pos_ + 1 < input_.size()) {
                pos_++;
            }
            text += input_[pos_++];
        }
        pos_++; // the closing quote, if any
        return text;
    }

    // {N}, {N+} (LITERAL+), then an optional line end, then N bytes (fewer if
    // the input ends). Anything else starting with '{' is an atom.
    std::optional<std::string> read_literal() {
        std::size_t p = pos_;
        if (input_[p] != '{') {
            return std::nullopt;
        }
        p++;
        std::size_t length = 0;
        std::size_t digits = 0;
        while (p < input_.size() && is_digit(input_[p]) && digits < max_literal_digits) {
            length = length * 10 + static_cast<std::size_t>(input_[p] - '0');
            p++;
            digits++;
        }
        if (digits == 0) {
            return std::nullopt;
        }
        if (p < input_.size() && input_[p] == '+') {
            p++;
        }
        if (p >= input_.size() || input_[p] != '}') {
            return std::nullopt;
        }
        p++;
        if (p < input_.size() && input_[p] == '\r') {
            p++;
        }
        if (p < input_.size() && input_[p] == '\n') {
            p++;
        }
        length = std::min(length, input_.size() - p);
        pos_ = p + length;
        return std::string(input_.substr(p, length));
    }

    std::string read_atom() {
        std::size_t start = pos_;
        while (pos_ < input_.size() && !is_space(input_[pos_]) && input_[pos_] != '(' &&
               input_[pos_] != ')' && input_[pos_] != '"') {
            pos_++;
        }
        return std::string(input_.substr(start, pos_ - start));
    }

    std::string_view input_;
    std::size_t pos_ = 0;
};

bool is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '+' || c == ',';
}

// A stand-in for Dovecot's imap_utf7_to_utf8 with the same kinds of outcome:
// 7-bit only, "&-" is '&', "&<base64>-" is a shifted run (shown here as
// "[run]"), a run of 'A's only decodes to NULs that are dropped (so a name can
// decode to nothing), "&AA<c>-" decodes to a control character as "&AAE-"
// does (or is invalid, as an encoded NUL is), and an unterminated or malformed
// run is invalid.
std::optional<std::string> toy_utf7_decode(const std::string &name) {
    std::string utf8;
    for (std::size_t i = 0; i < name.size(); i++) {
        char c = name[i];
        if (static_cast<unsigned char>(c) >= 0x80) {
            return std::nullopt;
        }
        if (c != '&') {
            utf8 += c;
            continue;
        }
        std::size_t end = name.find('-', i + 1);
        if (end == std::string::npos) {
            return std::nullopt;
        }
        std::string_view run = std::string_view(name).substr(i + 1, end - i - 1);
        if (run.empty()) {
            utf8 += '&';
        } else if (!std::ranges::all_of(run, is_base64_char)) {
            return std::nullopt;
        } else if (run.size() == 3 && run.starts_with("AA")) {
            auto control = static_cast<char>(static_cast<unsigned char>(run[2]) & 0x1f);
            if (control == 0) {
                return std::nullopt;
            }
            utf8 += control;
        } else if (!std::ranges::all_of(run, [](char r) { return r == 'A'; })) {
            utf8 += '[';
            utf8 += run;
            utf8 += ']';
        }
        i = end;
    }
    return utf8;
}

bool has_control_character(std::string_view text) {
    return std::ranges::any_of(text, [](char c) {
        auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7f;
    });
}

bool is_lower_hex(std::string_view text) {
    return std::ranges::all_of(text, [](char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); });
}

std::string lowered(std::string_view text) {
    std::string result(text);
    std::ranges::transform(result, result.begin(), to_lower);
    return result;
}

// The value of the pair whose key is `key`; the parser refuses repeated keys,
// so for an accepted request there is exactly one.
const RequestArg *value_of(const std::vector<RequestArg> &args, std::string_view key) {
    for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
        if (args[i].kind == RequestArg::Kind::string && equals_ignore_case(args[i].text, key)) {
            return &args[i + 1];
        }
    }
    return nullptr;
}

std::string normalized_mailbox(std::string utf8) {
    return equals_ignore_case(utf8, "INBOX") ? std::string("INBOX") : utf8;
}

void check_refusal(const RequestError &error) {
    XAPS_FUZZ_CHECK(!error.message.empty());
    XAPS_FUZZ_CHECK(error.message.size() <= 100);
    // It goes into the tagged reply: printable ASCII, so no CR/LF either.
    XAPS_FUZZ_CHECK(std::ranges::all_of(error.message, [](char c) {
        auto byte = static_cast<unsigned char>(c);
        return byte >= 0x20 && byte < 0x7f;
    }));
    // No client data in it: the parser only has a fixed set of messages.
    static std::set<std::string> seen_messages;
    seen_messages.insert(error.message);
    XAPS_FUZZ_CHECK(seen_messages.size() <= 40);
}

void check_mailboxes(const ApsRequest &request, const std::vector<RequestArg> &args,
                     const RequestPolicy &policy) {
    const auto decode = [&](const std::string &name) {
        return policy.decode_mailbox_name ? policy.decode_mailbox_name(name) : std::optional(name);
    };
    // An empty list is accepted: the client asked for no mailbox.
    XAPS_FUZZ_CHECK(request.mailboxes.size() <= xaps::limits::max_mailboxes);
    std::set<std::string> distinct;
    for (const RequestMailbox &mailbox : request.mailboxes) {
        XAPS_FUZZ_CHECK(!mailbox.as_sent.empty());
        XAPS_FUZZ_CHECK(mailbox.as_sent.size() <= xaps::limits::max_mailbox_name_length);
        XAPS_FUZZ_CHECK(!has_control_character(mailbox.as_sent));
        XAPS_FUZZ_CHECK(!mailbox.utf8.empty());
        XAPS_FUZZ_CHECK(mailbox.utf8.size() <= xaps::limits::max_mailbox_name_length);
        XAPS_FUZZ_CHECK(!has_control_character(mailbox.utf8));
        std::optional<std::string> decoded = decode(mailbox.as_sent);
        XAPS_FUZZ_CHECK(decoded.has_value());
        XAPS_FUZZ_CHECK(mailbox.utf8 == normalized_mailbox(*decoded));
        XAPS_FUZZ_CHECK(distinct.insert(mailbox.utf8).second);
    }

    const RequestArg *list = value_of(args, "mailboxes");
    if (request.aps_version == 1 || list == nullptr) {
        const std::vector<RequestMailbox> inbox_only{{"INBOX", "INBOX"}};
        XAPS_FUZZ_CHECK(request.mailboxes == inbox_only);
        return;
    }
    // Version 2: exactly the listed names, first occurrence of each, in order.
    XAPS_FUZZ_CHECK(list->kind == RequestArg::Kind::list);
    std::vector<RequestMailbox> expected;
    for (const RequestArg &item : list->items) {
        XAPS_FUZZ_CHECK(item.kind == RequestArg::Kind::string);
        std::string utf8 = normalized_mailbox(decode(item.text).value_or(""));
        if (std::ranges::none_of(expected, [&](const auto &m) { return m.utf8 == utf8; })) {
            expected.push_back({item.text, utf8});
        }
    }
    XAPS_FUZZ_CHECK(request.mailboxes == expected);
}

void check_accepted(const ApsRequest &request, const std::vector<RequestArg> &args,
                    const RequestPolicy &policy) {
    XAPS_FUZZ_CHECK(args.size() % 2 == 0);
    XAPS_FUZZ_CHECK(request.aps_version == 1 || request.aps_version == 2);
    const RequestArg *version = value_of(args, "aps-version");
    XAPS_FUZZ_CHECK(version != nullptr && version->text == std::to_string(request.aps_version));

    XAPS_FUZZ_CHECK(!request.account_id.empty());
    XAPS_FUZZ_CHECK(request.account_id.size() <= xaps::limits::max_account_id_length);
    XAPS_FUZZ_CHECK(!has_control_character(request.account_id));
    const RequestArg *account_id = value_of(args, "aps-account-id");
    XAPS_FUZZ_CHECK(account_id != nullptr && account_id->text == request.account_id);

    XAPS_FUZZ_CHECK(!request.device_token.empty());
    XAPS_FUZZ_CHECK(request.device_token.size() <= xaps::limits::max_device_token_length);
    XAPS_FUZZ_CHECK(request.device_token.size() % 2 == 0);
    XAPS_FUZZ_CHECK(is_lower_hex(request.device_token));
    const RequestArg *token = value_of(args, "aps-device-token");
    XAPS_FUZZ_CHECK(token != nullptr && lowered(token->text) == request.device_token);

    XAPS_FUZZ_CHECK(std::ranges::find(policy.subtopics, request.subtopic) !=
                    policy.subtopics.end());
    XAPS_FUZZ_CHECK(request.subtopic.size() <= xaps::limits::max_subtopic_length);
    const RequestArg *subtopic = value_of(args, "aps-subtopic");
    XAPS_FUZZ_CHECK(subtopic != nullptr && subtopic->text == request.subtopic);

    check_mailboxes(request, args, policy);
}

ParsedRequest parse_and_check(const std::vector<RequestArg> &args, const RequestPolicy &policy) {
    ParsedRequest parsed = xaps::plugin::parse_aps_request(args, policy);
    XAPS_FUZZ_CHECK(xaps::plugin::parse_aps_request(args, policy) == parsed); // deterministic
    if (const auto *request = std::get_if<ApsRequest>(&parsed)) {
        check_accepted(*request, args, policy);
    } else {
        check_refusal(std::get<RequestError>(parsed));
    }
    return parsed;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char *>(data), size);
    const std::vector<RequestArg> args = ArgumentReader(input).read_all();
    const std::vector<std::string> subtopics{"com.apple.mobilemail", "com.example.other"};

    ParsedRequest decoded = parse_and_check(args, RequestPolicy{subtopics, toy_utf7_decode});
    ParsedRequest raw = parse_and_check(args, RequestPolicy{subtopics, {}});
    ParsedRequest nothing = parse_and_check(args, RequestPolicy{{}, toy_utf7_decode});

    XAPS_FUZZ_CHECK(std::holds_alternative<RequestError>(nothing));
    // The decoder can only add reasons to refuse: what it accepts, the raw
    // names accept too, with the same fields apart from the mailboxes.
    if (const auto *with_decoder = std::get_if<ApsRequest>(&decoded)) {
        const auto *without_decoder = std::get_if<ApsRequest>(&raw);
        XAPS_FUZZ_CHECK(without_decoder != nullptr);
        XAPS_FUZZ_CHECK(without_decoder->aps_version == with_decoder->aps_version);
        XAPS_FUZZ_CHECK(without_decoder->account_id == with_decoder->account_id);
        XAPS_FUZZ_CHECK(without_decoder->device_token == with_decoder->device_token);
        XAPS_FUZZ_CHECK(without_decoder->subtopic == with_decoder->subtopic);
    }
    return 0;
}
