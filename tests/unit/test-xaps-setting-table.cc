// The table against what admins read: every setting that conf.d/95-xaps.conf
// (Dovecot 2.3 and 2.4) and README.md document exists in the table with the
// documented default, and every setting in the table is documented.
#include "xaps-setting-table.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#ifndef XAPS_SOURCE_DIR
#error "XAPS_SOURCE_DIR must name the source tree (tests/unit/meson.build)"
#endif

namespace {

using Defaults = std::map<std::string, std::string>; // setting name -> default

std::string source_file(const std::string &relative) {
    std::ifstream in(std::string(XAPS_SOURCE_DIR) + "/" + relative);
    EXPECT_TRUE(in.good()) << relative;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// The conf files show every setting commented out with its default:
// "#xaps_delay = 30s", "#xaps_apns_ca_file =" (unset).
Defaults conf_defaults(const std::string &relative) {
    static const std::regex setting_line(R"(^\s*#?\s*(xaps_[a-z0-9_]+)\s*=\s*(.*?)\s*$)");
    Defaults defaults;
    std::istringstream lines(source_file(relative));
    std::string line;
    while (std::getline(lines, line)) {
        std::smatch match;
        if (std::regex_match(line, match, setting_line)) {
            EXPECT_TRUE(defaults.emplace(match[1], match[2]).second)
                << relative << " shows " << match[1] << " twice";
        }
    }
    return defaults;
}

std::vector<std::string> code_spans(const std::string &text) {
    static const std::regex code_span("`([^`]*)`");
    std::vector<std::string> spans;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), code_span);
         it != std::sregex_iterator(); ++it) {
        spans.push_back((*it)[1]);
    }
    return spans;
}

// README.md's table under "## Configuration": `names` | meaning | default.
// Values in the default column are code spans, one per name; a default
// without code spans is prose for "unset".
Defaults readme_defaults() {
    const std::string readme = source_file("README.md");
    const std::size_t section = readme.find("\n## Configuration\n");
    EXPECT_NE(section, std::string::npos) << "README.md has no Configuration section";
    if (section == std::string::npos) {
        return {};
    }
    const std::size_t section_end = readme.find("\n## ", section + 1);
    std::istringstream lines(readme.substr(section, section_end - section));
    Defaults defaults;
    std::string line;
    while (std::getline(lines, line)) {
        if (!line.starts_with("| `xaps_")) {
            continue;
        }
        std::vector<std::string> cells;
        std::istringstream row(line);
        std::string cell;
        while (std::getline(row, cell, '|')) {
            cells.push_back(cell);
        }
        // "", names, meaning, default (the trailing "|" adds no cell)
        EXPECT_EQ(cells.size(), 4U) << line;
        if (cells.size() != 4) {
            continue;
        }
        const std::vector<std::string> names = code_spans(cells[1]);
        std::vector<std::string> values = code_spans(cells[3]);
        if (values.empty()) {
            values.assign(names.size(), "");
        }
        EXPECT_EQ(values.size(), names.size()) << "cannot pair names and defaults: " << line;
        for (std::size_t i = 0; i < names.size() && i < values.size(); i++) {
            EXPECT_TRUE(defaults.emplace(names[i], values[i]).second)
                << "README.md documents " << names[i] << " twice";
        }
    }
    return defaults;
}

class DocumentedDefaults : public ::testing::TestWithParam<const char *> {};

TEST_P(DocumentedDefaults, MatchTheTable) {
    const std::string document = GetParam();
    const Defaults documented =
        document == "README.md" ? readme_defaults() : conf_defaults(document);

    std::set<std::string> in_table;
    for (const xaps::SettingRow &row : xaps::xaps_setting_table) {
        SCOPED_TRACE(row.name);
        in_table.insert(row.name);
        auto it = documented.find(row.name);
        if (it == documented.end()) {
            ADD_FAILURE() << document << " does not document " << row.name;
            continue;
        }
        EXPECT_EQ(it->second, row.default_value) << "the default " << document << " shows";
    }
    for (const auto &[name, value] : documented) {
        EXPECT_TRUE(in_table.contains(name))
            << document << " documents " << name << ", which is not a setting";
    }
}

INSTANTIATE_TEST_SUITE_P(Documents, DocumentedDefaults,
                         ::testing::Values("conf.d/95-xaps.conf", "conf.d/2.4/95-xaps.conf",
                                           "README.md"));

// The end-to-end test of several backends runs docs/several-backends-example.conf;
// the README must show that same, tested, configuration.
TEST(XapsSettingTable, ReadmeShowsTheTestedSeveralBackendsExample) {
    const std::string example = source_file("docs/several-backends-example.conf");
    ASSERT_NE(example, "");
    EXPECT_NE(source_file("README.md").find("```\n" + example + "```\n"), std::string::npos)
        << "README.md's \"Several backends\" does not show docs/several-backends-example.conf "
           "as a block";
}

TEST(XapsSettingTable, NamesAreUniqueAndPrefixed) {
    std::set<std::string> names;
    for (const xaps::SettingRow &row : xaps::xaps_setting_table) {
        SCOPED_TRACE(row.name);
        EXPECT_TRUE(std::string(row.name).starts_with("xaps_"));
        EXPECT_TRUE(names.insert(row.name).second) << "twice in the table";
        EXPECT_NE(std::string(row.help), "");
    }
}

// The names are a public contract: none may disappear or change.
TEST(XapsSettingTable, HasEveryPublicName) {
    const char *const public_names[] = {
        "xaps_socket_path",
        "xaps_user_lookup",
        "xaps_db_path",
        "xaps_apns_host",
        "xaps_apns_port",
        "xaps_apns_ca_file",
        "xaps_apns_cert_file",
        "xaps_apns_key_file",
        "xaps_apns_p12_file",
        "xaps_apns_p12_password",
        "xaps_apns_token_key_file",
        "xaps_apns_key_id",
        "xaps_apns_team_id",
        "xaps_apns_topic",
        "xaps_apns_push_type",
        "xaps_apns_priority",
        "xaps_apns_expiration",
        "xaps_apns_connections",
        "xaps_delay",
        "xaps_registration_ttl",
        "xaps_max_devices_per_user",
        "xaps_subtopics",
        "xaps_apple_id",
        "xaps_apple_password_hash",
        "xaps_caservice_url",
        "xaps_caservice_vendor_key_file",
        "xaps_caservice_vendor_chain_file",
    };
    std::set<std::string> in_table;
    for (const xaps::SettingRow &row : xaps::xaps_setting_table) {
        in_table.insert(row.name);
    }
    for (const char *name : public_names) {
        EXPECT_TRUE(in_table.contains(name)) << name;
    }
}

TEST(XapsSettingTable, EveryDefaultIsAValidValue) {
    EXPECT_NO_THROW(xaps::default_xaps_settings());
}

TEST(XapsSettingTable, TypesAndLimits) {
    const std::map<std::string, std::tuple<xaps::SettingType, std::uint64_t, std::uint64_t>>
        expected = {
            {"xaps_apns_port", {xaps::SettingType::number, 1, 65535}},
            {"xaps_apns_priority", {xaps::SettingType::number, 1, 10}},
            {"xaps_apns_connections", {xaps::SettingType::number, 1, 64}},
            {"xaps_max_devices_per_user", {xaps::SettingType::number, 1, 1000}},
            {"xaps_db_max_size", {xaps::SettingType::size, 1048576, 17592186044416}},
        };
    for (const xaps::SettingRow &row : xaps::xaps_setting_table) {
        SCOPED_TRACE(row.name);
        if (auto it = expected.find(row.name); it != expected.end()) {
            EXPECT_EQ(row.type, std::get<0>(it->second));
            EXPECT_EQ(row.minimum, std::get<1>(it->second));
            EXPECT_EQ(row.maximum, std::get<2>(it->second));
        }
    }
}

} // namespace
