#include "imap-client.h"

#include "xaps-error.h"

#include <charconv>
#include <sstream>

namespace xaps::test {

namespace {

// The size of the literal announced at the end of a response line ("... {12}"), if any.
bool literal_size_at_end(std::string_view line, std::size_t &size_r) {
    if (line.empty() || line.back() != '}') {
        return false;
    }
    auto open = line.rfind('{');
    if (open == std::string_view::npos) {
        return false;
    }
    std::string_view digits = line.substr(open + 1, line.size() - open - 2);
    if (!digits.empty() && digits.back() == '+') {
        digits.remove_suffix(1);
    }
    auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), size_r);
    return !digits.empty() && error == std::errc{} && end == digits.data() + digits.size();
}

} // namespace

std::string ImapResponse::status() const {
    std::string_view rest(tagged);
    if (rest.size() <= tag.size() + 1) {
        return {};
    }
    rest.remove_prefix(tag.size() + 1);
    return std::string(rest.substr(0, rest.find(' ')));
}

std::vector<std::string> ImapResponse::lines() const {
    std::vector<std::string> all = untagged;
    all.push_back(tagged);
    return all;
}

std::string imap_quote(std::string_view text) {
    std::string quoted = "\"";
    for (char c : text) {
        if (c == '"' || c == '\\') {
            quoted += '\\';
        }
        quoted += c;
    }
    quoted += '"';
    return quoted;
}

std::set<std::string> parse_capabilities(std::string_view line) {
    std::string_view list;
    if (auto code = line.find("[CAPABILITY "); code != std::string_view::npos) {
        list = line.substr(code + 12);
        list = list.substr(0, list.find(']'));
    } else if (line.starts_with("* CAPABILITY ")) {
        list = line.substr(13);
    }
    std::set<std::string> names;
    std::istringstream words{std::string(list)};
    for (std::string word; words >> word;) {
        names.insert(word);
    }
    return names;
}

ImapClient::ImapClient(std::uint16_t port, Milliseconds timeout)
    : connection_(LineConnection::connect_tcp("127.0.0.1", port, timeout)) {
    connection_.set_timeout(timeout);
    greeting_ = connection_.read_line();
    if (!greeting_.starts_with("* OK")) {
        throw Error(ErrorKind::unavailable, "unexpected IMAP greeting: " + greeting_);
    }
}

std::string ImapClient::next_tag() {
    return "a" + std::to_string(++tag_counter_);
}

ImapResponse ImapClient::login(std::string_view user, std::string_view password) {
    return command("LOGIN " + imap_quote(user) + " " + imap_quote(password));
}

ImapResponse ImapClient::command(std::string_view text) {
    return command_with_tag(next_tag(), text);
}

ImapResponse ImapClient::command_with_tag(std::string_view tag, std::string_view text) {
    std::string line = std::string(tag) + " " + std::string(text);
    if (trace_) {
        trace_(TraceDirection::to_server, line);
    }
    connection_.write_all(line + "\r\n");
    return read_response(tag);
}

std::set<std::string> ImapClient::capabilities() {
    ImapResponse response = command("CAPABILITY");
    if (!response.ok()) {
        throw Error(ErrorKind::unavailable, "CAPABILITY failed: " + response.tagged);
    }
    for (const auto &line : response.untagged) {
        if (line.starts_with("* CAPABILITY ")) {
            return parse_capabilities(line);
        }
    }
    throw Error(ErrorKind::unavailable, "no untagged CAPABILITY in the reply");
}

void ImapClient::send_raw(std::string_view bytes) {
    if (trace_) {
        trace_(TraceDirection::to_server, bytes);
    }
    connection_.write_all(bytes);
}

std::string ImapClient::read_line() {
    std::string line = connection_.read_line();
    std::size_t literal_size = 0;
    while (literal_size_at_end(line, literal_size)) {
        line += "\r\n" + connection_.read_exact(literal_size);
        line += connection_.read_line();
    }
    if (trace_) {
        trace_(TraceDirection::from_server, line);
    }
    return line;
}

ImapResponse ImapClient::read_response(std::string_view tag) {
    ImapResponse response;
    response.tag = tag;
    const std::string prefix = std::string(tag) + " ";
    for (;;) {
        std::string line = read_line();
        if (line.starts_with(prefix)) {
            response.tagged = std::move(line);
            return response;
        }
        response.untagged.push_back(std::move(line));
    }
}

} // namespace xaps::test
