#include "registration-record.h"

#include "xaps-error.h"

#include <algorithm>
#include <array>

namespace xaps::record {

namespace {

constexpr std::uint8_t format_version = 2;
constexpr std::uint8_t format1_version = 1;
constexpr std::string_view mail_subtopic = "com.apple.mobilemail";

enum Tag : std::uint8_t { as_is = 0, binary = 1, binary_lower = 2 };

void append_varint(std::string &out, std::uint64_t value) {
    while (value >= 0x80) {
        out.push_back(static_cast<char>((value & 0x7f) | 0x80));
        value >>= 7;
    }
    out.push_back(static_cast<char>(value));
}

void append_bytes(std::string &out, std::string_view bytes) {
    append_varint(out, bytes.size());
    out.append(bytes);
}

std::uint64_t zigzag(std::int64_t value) {
    return (static_cast<std::uint64_t>(value) << 1) ^ static_cast<std::uint64_t>(value >> 63);
}

std::int64_t unzigzag(std::uint64_t value) {
    return static_cast<std::int64_t>((value >> 1) ^ (~(value & 1) + 1));
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool is_hex_of_case(char c, bool upper) {
    return (c >= '0' && c <= '9') || (upper ? c >= 'A' && c <= 'F' : c >= 'a' && c <= 'f');
}

void append_hex_bytes(std::string &out, std::string_view hex) {
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        out.push_back(static_cast<char>(hex_value(hex[i]) << 4 | hex_value(hex[i + 1])));
    }
}

void append_hex_digits(std::string &out, std::string_view bytes, bool upper) {
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    for (char byte : bytes) {
        auto value = static_cast<unsigned char>(byte);
        out.push_back(digits[value >> 4]);
        out.push_back(digits[value & 0xf]);
    }
}

// The positions of a UUID's dashes, 8-4-4-4-12.
constexpr std::array<std::size_t, 4> uuid_dashes{8, 13, 18, 23};
constexpr std::size_t uuid_length = 36;

bool is_uuid_of_case(std::string_view text, bool upper) {
    if (text.size() != uuid_length) {
        return false;
    }
    for (std::size_t i = 0; i < text.size(); ++i) {
        const bool dash = std::ranges::find(uuid_dashes, i) != uuid_dashes.end();
        if (dash ? text[i] != '-' : !is_hex_of_case(text[i], upper)) {
            return false;
        }
    }
    return true;
}

class Reader {
public:
    Reader(std::string_view data, std::string_view path) : data_(data), path_(path) {}

    std::uint8_t byte() {
        need(1);
        return static_cast<std::uint8_t>(data_[pos_++]);
    }

    std::uint64_t varint() {
        std::uint64_t value = 0;
        for (unsigned shift = 0; shift < 64; shift += 7) {
            std::uint8_t b = byte();
            value |= std::uint64_t{b & 0x7fu} << shift;
            if ((b & 0x80) == 0) {
                return value;
            }
        }
        corrupt("varint too long");
    }

    std::int64_t int64() {
        need(8);
        std::uint64_t bits = 0;
        for (int i = 7; i >= 0; --i) {
            bits =
                (bits << 8) | static_cast<unsigned char>(data_[pos_ + static_cast<std::size_t>(i)]);
        }
        pos_ += 8;
        return static_cast<std::int64_t>(bits);
    }

    std::string_view bytes() {
        std::uint64_t size = varint();
        need(size);
        auto view = data_.substr(pos_, size);
        pos_ += size;
        return view;
    }

    // A compact form's tag and what follows it.
    std::pair<std::uint8_t, std::string_view> tagged() {
        std::string_view form = bytes();
        if (form.empty()) {
            corrupt("empty compact field");
        }
        return {static_cast<std::uint8_t>(form[0]), form.substr(1)};
    }

    void device_token_into(std::string &out) {
        auto [tag, rest] = tagged();
        out.clear();
        if (tag == binary && !rest.empty()) {
            append_hex_digits(out, rest, false);
        } else if (tag == as_is) {
            out.assign(rest);
        } else {
            corrupt("device token form");
        }
    }

    void account_id_into(std::string &out) {
        auto [tag, rest] = tagged();
        out.clear();
        if ((tag == binary || tag == binary_lower) && rest.size() == 16) {
            // 8-4-4-4-12 digits: a dash before bytes 4, 6, 8 and 10.
            for (std::size_t i = 0; i < rest.size(); ++i) {
                if (i == 4 || i == 6 || i == 8 || i == 10) {
                    out.push_back('-');
                }
                append_hex_digits(out, rest.substr(i, 1), tag == binary);
            }
        } else if (tag == as_is) {
            out.assign(rest);
        } else {
            corrupt("account id form");
        }
    }

    void subtopic_into(std::string &out) {
        auto [tag, rest] = tagged();
        if (tag == binary && rest.empty()) {
            out.assign(mail_subtopic);
        } else if (tag == as_is) {
            out.assign(rest);
        } else {
            corrupt("subtopic form");
        }
    }

    void mailboxes_into(std::vector<std::string> &mailboxes) {
        std::uint64_t count = varint();
        if (count > data_.size()) { // each mailbox takes at least one byte
            corrupt("mailbox count");
        }
        mailboxes.resize(count);
        for (std::string &mailbox : mailboxes) {
            mailbox = bytes();
        }
    }

    void expect_end() {
        if (pos_ != data_.size()) {
            corrupt("trailing bytes");
        }
    }

    [[noreturn]] void corrupt(std::string_view what) const {
        throw Error(ErrorKind::internal, "LMDB store " + std::string(path_) +
                                             ": corrupt registration record: " + std::string(what));
    }

private:
    void need(std::uint64_t size) const {
        if (size > data_.size() - pos_) {
            corrupt("truncated");
        }
    }

    std::string_view data_;
    std::string_view path_;
    std::size_t pos_ = 0;
};

} // namespace

std::string compact_device_token(std::string_view device_token) {
    std::string form;
    form.reserve(1 + device_token.size());
    if (!device_token.empty() && device_token.size() % 2 == 0 &&
        std::ranges::all_of(device_token, [](char c) { return is_hex_of_case(c, false); })) {
        form.push_back(static_cast<char>(binary));
        append_hex_bytes(form, device_token);
    } else {
        form.push_back(static_cast<char>(as_is));
        form.append(device_token);
    }
    return form;
}

std::string compact_account_id(std::string_view account_id) {
    std::string form;
    form.reserve(1 + account_id.size());
    const bool upper = is_uuid_of_case(account_id, true);
    if (upper || is_uuid_of_case(account_id, false)) {
        form.push_back(static_cast<char>(upper ? binary : binary_lower));
        std::string digits;
        std::ranges::copy_if(account_id, std::back_inserter(digits),
                             [](char c) { return c != '-'; });
        append_hex_bytes(form, digits);
    } else {
        form.push_back(static_cast<char>(as_is));
        form.append(account_id);
    }
    return form;
}

std::string encode(const Registration &registration) {
    std::string out;
    out.reserve(64 + registration.user.size() + registration.mailboxes.size() * 16);
    out.push_back(static_cast<char>(format_version));
    append_varint(out, registration.aps_version);
    append_varint(out, zigzag(registration.last_seen));
    append_varint(out, static_cast<std::uint64_t>(registration.last_seen) -
                           static_cast<std::uint64_t>(registration.registered_at));
    append_bytes(out, registration.user);
    append_bytes(out, compact_account_id(registration.account_id));
    append_bytes(out, compact_device_token(registration.device_token));
    if (registration.subtopic == mail_subtopic) {
        append_bytes(out, std::string_view("\x01", 1));
    } else {
        append_varint(out, registration.subtopic.size() + 1);
        out.push_back(static_cast<char>(as_is));
        out.append(registration.subtopic);
    }
    append_varint(out, registration.mailboxes.size());
    for (const auto &mailbox : registration.mailboxes) {
        append_bytes(out, mailbox);
    }
    return out;
}

void decode_into(std::string_view value, std::string_view path, Registration &registration) {
    Reader reader(value, path);
    if (std::uint8_t format = reader.byte(); format != format_version) {
        reader.corrupt("unknown format version " + std::to_string(format));
    }
    registration.aps_version = static_cast<unsigned>(reader.varint());
    const std::uint64_t last_seen = reader.varint();
    registration.last_seen = unzigzag(last_seen);
    registration.registered_at = static_cast<std::int64_t>(
        static_cast<std::uint64_t>(registration.last_seen) - reader.varint());
    registration.user = reader.bytes();
    reader.account_id_into(registration.account_id);
    reader.device_token_into(registration.device_token);
    reader.subtopic_into(registration.subtopic);
    reader.mailboxes_into(registration.mailboxes);
    reader.expect_end();
}

Registration decode_format1(std::string_view key, std::string_view value, std::string_view path) {
    Reader reader(value, path);
    const std::size_t first = key.find('\0');
    const std::size_t second = first == std::string_view::npos ? first : key.find('\0', first + 1);
    if (second == std::string_view::npos) {
        reader.corrupt("malformed format 1 key");
    }
    if (std::uint8_t format = reader.byte(); format != format1_version) {
        reader.corrupt("unknown format version " + std::to_string(format));
    }
    Registration registration;
    registration.account_id = key.substr(first + 1, second - first - 1);
    registration.device_token = key.substr(second + 1);
    registration.aps_version = static_cast<unsigned>(reader.varint());
    registration.registered_at = reader.int64();
    registration.last_seen = reader.int64();
    registration.subtopic = reader.bytes();
    std::string_view spelling = reader.bytes();
    registration.user = spelling.empty() ? key.substr(0, first) : spelling;
    reader.mailboxes_into(registration.mailboxes);
    reader.expect_end();
    return registration;
}

} // namespace xaps::record
