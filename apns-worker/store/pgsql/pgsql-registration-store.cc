// The shared registration store on PostgreSQL.
//
// Tables (created at the first connection when missing; names prefixed xaps_
// so that the store can live in a database the admin already has):
//   xaps_meta           name -> bigint: schema_version (a newer one is
//                       refused with Error(config) rather than misread),
//                       pruned_through (tombstones up to this revision are
//                       gone), expire_last_run (unix seconds, see
//                       expire_once()).
//   xaps_registrations  one row per registration, unique on (user_lower,
//                       account_id, device_token). `id` orders a user's rows
//                       by first registration (the LMDB store's listing
//                       order); `revision` says when the row last changed.
//   xaps_tombstones     one row per removal: what each replica must delete.
// Text columns are COLLATE "C": keys compare byte by byte, as in LMDB, and
// the eviction order's ties on account id and token are byte order too.
// Users compare by ASCII lower-casing (user_lower is computed here, not with
// SQL lower(), whose result depends on the database's locale).
//
// Revisions: every row change takes the next value of xaps_revision, every
// removal writes a tombstone with one. Each writing transaction first takes
// one advisory lock (writer_lock_key), so writers run one at a time and the
// revision order is the commit order: a reader that has seen everything up
// to R and asks for "revision > R" never misses a transaction that took a
// smaller revision but committed later. Writes are short (one batch), so the
// lock costs little next to the commit's fsync.
//
// Tombstones are what lets a replica learn of a removal by revision; a
// deleted row leaves nothing behind to read. They are pruned after
// SharedStoreOptions::tombstone_retention by expire_once(): pruned_through
// becomes the newest pruned revision, and in the same transaction every live
// row at or below it takes a new revision. So every live row is always newer
// than pruned_through, and a reader behind it (ChangePage::reset) reloads from
// revision 0 and is past pruned_through after its first page. The newest
// tombstone is never pruned, so a reset page is never empty and the reader's
// revision always moves.
//
// Every call blocks with a deadline (the timeout): libpq's asynchronous API
// under poll(2), for the connection too. A call that runs out of time drops
// the connection; the server-side statement_timeout ends a statement that
// would go on, and with the connection gone its transaction rolls back, so
// the advisory lock is never held by a client that has given up.

#include "pgsql-registration-store.h"

#include "pgsql-handles.h"
#include "registration-rules.h"
#include "registration-validation.h"
#include "xaps-error.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace xaps {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::int64_t current_schema_version = 1;
// pg_advisory_xact_lock's key for writers: "xaps" in ASCII, then 1.
constexpr std::string_view writer_lock_key = "8126664316140666881";
// iOS registers each account again once 23 hours (82,800 s) have passed since
// its last registration; see RegistrationStore::put().
constexpr std::int64_t ios_reregistration_interval = 82800;
constexpr std::chrono::milliseconds first_backoff{1000};
constexpr std::chrono::milliseconds max_backoff{30000};
constexpr std::chrono::milliseconds default_timeout{5000};

constexpr const char *schema_sql = R"sql(
CREATE TABLE IF NOT EXISTS xaps_meta (
    name text COLLATE "C" PRIMARY KEY,
    value bigint NOT NULL);
CREATE SEQUENCE IF NOT EXISTS xaps_revision;
CREATE TABLE IF NOT EXISTS xaps_registrations (
    id bigserial PRIMARY KEY,
    user_name text COLLATE "C" NOT NULL,
    user_lower text COLLATE "C" NOT NULL,
    account_id text COLLATE "C" NOT NULL,
    device_token text COLLATE "C" NOT NULL,
    subtopic text COLLATE "C" NOT NULL,
    aps_version integer NOT NULL,
    mailboxes text[] COLLATE "C" NOT NULL,
    registered_at bigint NOT NULL,
    last_seen bigint NOT NULL,
    revision bigint NOT NULL,
    UNIQUE (user_lower, account_id, device_token));
CREATE INDEX IF NOT EXISTS xaps_registrations_revision ON xaps_registrations (revision);
CREATE INDEX IF NOT EXISTS xaps_registrations_device_token ON xaps_registrations (device_token);
CREATE INDEX IF NOT EXISTS xaps_registrations_last_seen ON xaps_registrations (last_seen);
CREATE INDEX IF NOT EXISTS xaps_registrations_user_id ON xaps_registrations (user_lower, id);
CREATE TABLE IF NOT EXISTS xaps_tombstones (
    revision bigint PRIMARY KEY,
    removed_at bigint NOT NULL,
    user_name text COLLATE "C" NOT NULL,
    user_lower text COLLATE "C" NOT NULL,
    account_id text COLLATE "C" NOT NULL,
    device_token text COLLATE "C" NOT NULL);
CREATE INDEX IF NOT EXISTS xaps_tombstones_removed_at ON xaps_tombstones (removed_at);
INSERT INTO xaps_meta (name, value) VALUES
    ('schema_version', 1), ('pruned_through', 0), ('expire_last_run', -4611686018427387904)
    ON CONFLICT (name) DO NOTHING;
)sql";

constexpr const char *registration_columns =
    "user_name, account_id, device_token, subtopic, aps_version, mailboxes, registered_at, "
    "last_seen";

// Removes the rows `condition` (a WHERE clause with bound parameters)
// selects, leaving a tombstone for each.
std::string delete_with_tombstones(std::string_view condition) {
    return "WITH gone AS (DELETE FROM xaps_registrations WHERE " + std::string(condition) +
           " RETURNING user_name, user_lower, account_id, device_token) "
           "INSERT INTO xaps_tombstones "
           "(revision, removed_at, user_name, user_lower, account_id, device_token) "
           "SELECT nextval('xaps_revision'), extract(epoch FROM now())::bigint, user_name, "
           "user_lower, account_id, device_token FROM gone";
}

std::string array_literal(const std::vector<std::string> &items) {
    std::string literal = "{";
    for (const std::string &item : items) {
        if (literal.size() > 1) {
            literal.push_back(',');
        }
        literal.push_back('"');
        for (char c : item) {
            if (c == '"' || c == '\\') {
                literal.push_back('\\');
            }
            literal.push_back(c);
        }
        literal.push_back('"');
    }
    literal.push_back('}');
    return literal;
}

// A one-dimensional text[] as PostgreSQL writes it: elements quoted (with
// backslash escapes) when they need it, bare otherwise.
std::vector<std::string> parse_array(std::string_view text) {
    std::vector<std::string> items;
    if (text.size() < 2 || text.front() != '{' || text.back() != '}') {
        throw Error(ErrorKind::internal, "shared registration store: malformed text[] value");
    }
    std::size_t i = 1;
    const std::size_t end = text.size() - 1;
    while (i < end) {
        std::string item;
        if (text[i] == '"') {
            for (++i; i < end && text[i] != '"'; ++i) {
                if (text[i] == '\\' && i + 1 < end) {
                    ++i;
                }
                item.push_back(text[i]);
            }
            ++i; // the closing quote
        } else {
            while (i < end && text[i] != ',') {
                item.push_back(text[i++]);
            }
        }
        items.push_back(std::move(item));
        if (i < end && text[i] == ',') {
            ++i;
        }
    }
    return items;
}

std::int64_t parse_int(const char *text) {
    std::int64_t value = 0;
    const char *end = text + std::strlen(text);
    auto [ptr, error] = std::from_chars(text, end, value);
    if (error != std::errc() || ptr != end) {
        throw Error(ErrorKind::internal, "shared registration store: malformed number");
    }
    return value;
}

// The registration in registration_columns order from column `first` on.
Registration registration_from(const PGresult *result, int row, int first) {
    Registration registration;
    registration.user = PQgetvalue(result, row, first);
    registration.account_id = PQgetvalue(result, row, first + 1);
    registration.device_token = PQgetvalue(result, row, first + 2);
    registration.subtopic = PQgetvalue(result, row, first + 3);
    registration.aps_version = static_cast<unsigned>(parse_int(PQgetvalue(result, row, first + 4)));
    registration.mailboxes = parse_array(PQgetvalue(result, row, first + 5));
    registration.registered_at = parse_int(PQgetvalue(result, row, first + 6));
    registration.last_seen = parse_int(PQgetvalue(result, row, first + 7));
    return registration;
}

// Text columns hold UTF-8 without NUL bytes; the other stores' rules
// (validate_registration) come first, so that both refuse alike.
void validate_for_postgresql(const Registration &registration) {
    validate_registration(registration);
    auto require_text = [](std::string_view value, std::string_view name) {
        if (value.find('\0') != std::string_view::npos || !is_valid_utf8(value)) {
            throw Error(ErrorKind::invalid_input,
                        "registration " + std::string(name) + " is not UTF-8 text");
        }
    };
    require_text(registration.user, "user");
    require_text(registration.account_id, "account id");
    require_text(registration.device_token, "device token");
    require_text(registration.subtopic, "subtopic");
    for (const std::string &mailbox : registration.mailboxes) {
        require_text(mailbox, "mailbox name");
    }
}

// page_after()'s position: "<id>:<lower-cased user>" of the last row looked
// at.
struct Position {
    std::int64_t id = 0;
    std::string user_lower;
};

Position parse_position(std::string_view after) {
    const std::size_t colon = after.find(':');
    Position position;
    if (colon == std::string_view::npos || colon == 0) {
        throw Error(ErrorKind::invalid_input, "not a listing position");
    }
    auto [ptr, error] = std::from_chars(after.data(), after.data() + colon, position.id);
    if (error != std::errc() || ptr != after.data() + colon) {
        throw Error(ErrorKind::invalid_input, "not a listing position");
    }
    position.user_lower = after.substr(colon + 1);
    return position;
}

std::string trimmed(std::string message) {
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
        message.pop_back();
    }
    std::replace(message.begin(), message.end(), '\n', ' ');
    return message;
}

class PgsqlRegistrationStore final : public SharedRegistrationStore {
public:
    explicit PgsqlRegistrationStore(const SharedStoreOptions &options)
        : conninfo_(options.conninfo),
          timeout_(options.timeout.count() > 0 ? options.timeout : default_timeout),
          ttl_(options.ttl.count()), max_devices_per_user_(options.max_devices_per_user),
          tombstone_retention_(options.tombstone_retention.count()) {
        char *error = nullptr;
        PQconninfoOption *parsed = PQconninfoParse(conninfo_.c_str(), &error);
        if (parsed == nullptr) {
            std::string reason = error != nullptr ? trimmed(error) : "out of memory";
            PQfreemem(error);
            throw Error(ErrorKind::config, "xaps_shared_store: " + reason);
        }
        PQconninfoFree(parsed);
    }

    // RegistrationStore

    void put(const Registration &registration, std::int64_t now) override {
        validate_for_postgresql(registration);
        write_transaction([&] { put_in(registration, now); });
    }

    std::vector<std::optional<Error>> put_batch(std::span<const Registration> registrations,
                                                std::int64_t now) override {
        return write_batch(registrations, now, {}).puts;
    }

    bool import(const Registration &registration) override {
        validate_for_postgresql(registration);
        return write_transaction([&] { return import_in(registration); });
    }

    std::vector<ImportResult> import_batch(std::span<const Registration> registrations) override {
        return write_batch({}, 0, registrations).imports;
    }

    // One transaction, so one commit (one fsync) for the whole batch.
    BatchResults write_batch(std::span<const Registration> puts, std::int64_t now,
                             std::span<const Registration> imports) override {
        BatchResults results;
        results.puts.resize(puts.size());
        results.imports.resize(imports.size());
        std::vector<std::size_t> valid_puts;
        std::vector<std::size_t> valid_imports;
        for (std::size_t i = 0; i < puts.size(); ++i) {
            try {
                validate_for_postgresql(puts[i]);
                valid_puts.push_back(i);
            } catch (const Error &error) {
                results.puts[i] = error;
            }
        }
        for (std::size_t i = 0; i < imports.size(); ++i) {
            try {
                validate_for_postgresql(imports[i]);
                valid_imports.push_back(i);
            } catch (const Error &error) {
                results.imports[i].error = error;
            }
        }
        if (valid_puts.empty() && valid_imports.empty()) {
            return results;
        }
        try {
            write_transaction([&] {
                for (std::size_t i : valid_puts) {
                    put_in(puts[i], now);
                }
                for (std::size_t i : valid_imports) {
                    results.imports[i].added = import_in(imports[i]);
                }
            });
        } catch (const Error &error) {
            for (std::size_t i : valid_puts) {
                results.puts[i] = error;
            }
            for (std::size_t i : valid_imports) {
                results.imports[i] = ImportResult{false, error};
            }
        }
        return results;
    }

    std::vector<Registration> find_user(std::string_view user, std::int64_t now) override {
        const std::string sql = std::string("SELECT ") + registration_columns +
                                " FROM xaps_registrations WHERE user_lower = $1 AND "
                                "last_seen >= $2 ORDER BY id";
        pgsql::Result result = exec(sql.c_str(), {lower_ascii(user), cutoff(now)});
        return registrations_of(result.get(), 0);
    }

    // Loads everything: for tests and exports only.
    std::vector<Registration> all() override {
        const std::string sql = std::string("SELECT ") + registration_columns +
                                " FROM xaps_registrations ORDER BY user_lower, id";
        pgsql::Result result = exec(sql.c_str(), {});
        return registrations_of(result.get(), 0);
    }

    std::size_t size() override {
        pgsql::Result result = exec("SELECT count(*) FROM xaps_registrations", {});
        return static_cast<std::size_t>(parse_int(PQgetvalue(result.get(), 0, 0)));
    }

    Page page_after(std::string_view user, std::string_view after, std::size_t max_rows,
                    std::int64_t now) override {
        max_rows = std::max<std::size_t>(max_rows, 1);
        Position position;
        if (!after.empty()) {
            position = parse_position(after);
        }
        const std::string user_lower = lower_ascii(user);
        // One row more than asked for tells whether the walk goes on.
        const std::string sql = std::string("SELECT id, user_lower, ") + registration_columns +
                                " FROM xaps_registrations WHERE ($1 = '' OR user_lower = $1) AND "
                                "(user_lower, id) > ($2, $3) ORDER BY user_lower, id LIMIT $4";
        pgsql::Result result =
            exec(sql.c_str(), {user_lower, position.user_lower, std::to_string(position.id),
                               std::to_string(max_rows + 1)});
        Page page;
        const int rows = PQntuples(result.get());
        const int looked_at = std::min(rows, static_cast<int>(max_rows));
        for (int row = 0; row < looked_at; ++row) {
            Registration registration = registration_from(result.get(), row, 2);
            if (!expired(registration.last_seen, now)) {
                page.registrations.push_back(std::move(registration));
            }
        }
        if (rows > looked_at) {
            page.next_after = std::string(PQgetvalue(result.get(), looked_at - 1, 0)) + ":" +
                              PQgetvalue(result.get(), looked_at - 1, 1);
        }
        return page;
    }

    std::size_t remove_user(std::string_view user) override {
        return write_transaction([&] {
            return affected(
                exec(delete_with_tombstones("user_lower = $1").c_str(), {lower_ascii(user)}));
        });
    }

    std::size_t remove_token(std::string_view device_token) override {
        const GoneToken gone{std::string(device_token), std::nullopt};
        return remove_gone_tokens({&gone, 1});
    }

    std::size_t remove_all() override {
        return write_transaction(
            [&] { return affected(exec(delete_with_tombstones("true").c_str(), {})); });
    }

    std::size_t remove_token_unless_seen_since(std::string_view device_token,
                                               std::int64_t since) override {
        const GoneToken gone{std::string(device_token), since};
        return remove_gone_tokens({&gone, 1});
    }

    // One transaction for the batch of 410s.
    std::size_t remove_gone_tokens(std::span<const GoneToken> tokens) override {
        if (std::ranges::all_of(tokens,
                                [](const GoneToken &gone) { return gone.device_token.empty(); })) {
            return 0;
        }
        return write_transaction([&] {
            std::size_t removed = 0;
            for (const GoneToken &gone : tokens) {
                if (gone.device_token.empty()) {
                    continue;
                }
                if (gone.since) {
                    removed += affected(exec(
                        delete_with_tombstones("device_token = $1 AND last_seen <= $2").c_str(),
                        {gone.device_token, std::to_string(*gone.since)}));
                } else {
                    removed += affected(exec(delete_with_tombstones("device_token = $1").c_str(),
                                             {gone.device_token}));
                }
            }
            return removed;
        });
    }

    std::size_t expire(std::int64_t now) override {
        return write_transaction([&] { return expire_in(now); });
    }

    // SharedRegistrationStore

    ChangePage changes_after(std::uint64_t revision, std::size_t max_changes) override {
        max_changes = std::max<std::size_t>(max_changes, 1);
        ChangePage page;
        // One snapshot for the prune point and the changes: a prune that
        // commits in between cannot hide tombstones from this read.
        exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", {});
        try {
            pgsql::Result pruned =
                exec("SELECT value FROM xaps_meta WHERE name = 'pruned_through'", {});
            const auto pruned_through =
                static_cast<std::uint64_t>(parse_int(PQgetvalue(pruned.get(), 0, 0)));
            page.reset = revision < pruned_through;
            const std::string from = std::to_string(page.reset ? 0 : revision);
            const std::string limit = std::to_string(max_changes);
            const std::string sql =
                std::string("SELECT revision, removed, ") + registration_columns +
                " FROM ((SELECT revision, false AS removed, " + registration_columns +
                " FROM xaps_registrations WHERE revision > $1 ORDER BY revision LIMIT $2)"
                " UNION ALL (SELECT revision, true, user_name, account_id, device_token, '', 0,"
                " '{}'::text[], 0::bigint, 0::bigint FROM xaps_tombstones WHERE revision > $1"
                " ORDER BY revision LIMIT $2)) AS changes ORDER BY revision LIMIT $2";
            pgsql::Result result = exec(sql.c_str(), {from, limit});
            exec("COMMIT", {});
            const int rows = PQntuples(result.get());
            page.changes.reserve(static_cast<std::size_t>(rows));
            for (int row = 0; row < rows; ++row) {
                StoreChange change;
                change.revision =
                    static_cast<std::uint64_t>(parse_int(PQgetvalue(result.get(), row, 0)));
                change.removed = PQgetvalue(result.get(), row, 1)[0] == 't';
                change.registration = registration_from(result.get(), row, 2);
                if (change.removed) {
                    Registration &key = change.registration;
                    key.subtopic.clear();
                    key.aps_version = 0;
                    key.mailboxes.clear();
                }
                page.changes.push_back(std::move(change));
            }
        } catch (...) {
            rollback_quietly();
            throw;
        }
        return page;
    }

    Wake wait(std::chrono::milliseconds timeout, int wake_fd) override {
        const auto deadline = Clock::now() + timeout;
        if (!connection_) {
            try {
                connect();
            } catch (const Error &) {
                // Unreachable: wait for the caller's work or the end of the
                // backoff, whichever comes first, then let it retry.
                const auto until = std::min(deadline, retry_at_);
                return wait_for_fd(wake_fd, until) ? Wake::woken : Wake::timeout;
            }
        }
        for (;;) {
            if (other_writer_notified()) {
                return Wake::changed;
            }
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            pollfd fds[2] = {{PQsocket(connection_.get()), POLLIN, 0}, {wake_fd, POLLIN, 0}};
            const int ready = ::poll(fds, wake_fd >= 0 ? 2 : 1,
                                     static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
            if (ready < 0 && errno != EINTR) {
                return Wake::timeout;
            }
            if (wake_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                return Wake::woken;
            }
            if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0 &&
                PQconsumeInput(connection_.get()) == 0) {
                drop_connection("connection lost: " + trimmed(PQerrorMessage(connection_.get())));
                return Wake::timeout;
            }
            if (ready == 0 && Clock::now() >= deadline) {
                return Wake::timeout;
            }
        }
    }

    std::optional<std::size_t> expire_once(std::int64_t now,
                                           std::chrono::seconds interval) override {
        return write_transaction([&]() -> std::optional<std::size_t> {
            // The one whose update finds the last run old enough runs it;
            // the advisory lock makes the others see its new value.
            pgsql::Result claimed =
                exec("UPDATE xaps_meta SET value = $1 WHERE name = 'expire_last_run' AND "
                     "value <= $1::bigint - $2::bigint RETURNING value",
                     {std::to_string(now), std::to_string(interval.count())});
            if (PQntuples(claimed.get()) == 0) {
                return std::nullopt;
            }
            const std::size_t expired_count = expire_in(now);
            prune_tombstones();
            return expired_count;
        });
    }

    std::string last_error() const override { return last_error_; }

private:
    std::string cutoff(std::int64_t now) const { return std::to_string(now - ttl_); }
    bool expired(std::int64_t last_seen, std::int64_t now) const { return last_seen < now - ttl_; }

    static std::vector<Registration> registrations_of(const PGresult *result, int first) {
        std::vector<Registration> registrations;
        const int rows = PQntuples(result);
        registrations.reserve(static_cast<std::size_t>(rows));
        for (int row = 0; row < rows; ++row) {
            registrations.push_back(registration_from(result, row, first));
        }
        return registrations;
    }

    static std::size_t affected(const pgsql::Result &result) {
        const char *count = PQcmdTuples(result.get());
        return count[0] == '\0' ? 0 : static_cast<std::size_t>(parse_int(count));
    }

    void put_in(const Registration &registration, std::int64_t now) {
        const std::string user_lower = lower_ascii(registration.user);
        const std::string now_text = std::to_string(now);
        exec("INSERT INTO xaps_registrations (user_name, user_lower, account_id, device_token, "
             "subtopic, aps_version, mailboxes, registered_at, last_seen, revision) "
             "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, nextval('xaps_revision')) "
             "ON CONFLICT (user_lower, account_id, device_token) DO UPDATE SET "
             "user_name = EXCLUDED.user_name, subtopic = EXCLUDED.subtopic, "
             "aps_version = EXCLUDED.aps_version, mailboxes = EXCLUDED.mailboxes, "
             "last_seen = EXCLUDED.last_seen, revision = EXCLUDED.revision",
             {registration.user, user_lower, registration.account_id, registration.device_token,
              registration.subtopic, std::to_string(registration.aps_version),
              array_literal(registration.mailboxes), now_text});
        exec(delete_with_tombstones("user_lower = $1 AND device_token = $2 AND account_id <> $3 "
                                    "AND last_seen <= $4::bigint - $5::bigint")
                 .c_str(),
             {user_lower, registration.device_token, registration.account_id, now_text,
              std::to_string(ios_reregistration_interval)});
        evict_beyond_cap(user_lower, registration);
    }

    bool import_in(const Registration &registration) {
        const std::string user_lower = lower_ascii(registration.user);
        pgsql::Result inserted =
            exec("INSERT INTO xaps_registrations (user_name, user_lower, account_id, "
                 "device_token, subtopic, aps_version, mailboxes, registered_at, last_seen, "
                 "revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                 "nextval('xaps_revision')) ON CONFLICT (user_lower, account_id, device_token) "
                 "DO NOTHING",
                 {registration.user, user_lower, registration.account_id, registration.device_token,
                  registration.subtopic, std::to_string(registration.aps_version),
                  array_literal(registration.mailboxes), std::to_string(registration.registered_at),
                  std::to_string(registration.last_seen)});
        if (affected(inserted) == 0) {
            return false;
        }
        evict_beyond_cap(user_lower, registration);
        return true;
    }

    // Keeps the user at max_devices_per_user registrations (0: no cap),
    // removing the least recently seen ones but `kept`, the one just written.
    // Ties go to the older registration, then to account id and token order.
    void evict_beyond_cap(const std::string &user_lower, const Registration &kept) {
        if (max_devices_per_user_ == 0) {
            return;
        }
        exec(delete_with_tombstones(
                 "id IN (SELECT id FROM xaps_registrations WHERE user_lower = $1 AND "
                 "NOT (account_id = $2 AND device_token = $3) "
                 "ORDER BY last_seen, registered_at, account_id, device_token "
                 "LIMIT greatest(0, (SELECT count(*) FROM xaps_registrations "
                 "WHERE user_lower = $1) - $4::bigint))")
                 .c_str(),
             {user_lower, kept.account_id, kept.device_token,
              std::to_string(max_devices_per_user_)});
    }

    std::size_t expire_in(std::int64_t now) {
        return affected(exec(delete_with_tombstones("last_seen < $1").c_str(), {cutoff(now)}));
    }

    // Forgets removals older than the retention, keeping the newest
    // tombstone; see the top of this file for why live rows move past the
    // prune point.
    void prune_tombstones() {
        pgsql::Result newest = exec("SELECT max(revision) FROM xaps_tombstones WHERE removed_at <= "
                                    "extract(epoch FROM now())::bigint - $1::bigint AND revision < "
                                    "(SELECT max(revision) FROM xaps_tombstones)",
                                    {std::to_string(tombstone_retention_)});
        if (PQgetisnull(newest.get(), 0, 0) != 0) {
            return;
        }
        const std::string pruned_through = PQgetvalue(newest.get(), 0, 0);
        exec("DELETE FROM xaps_tombstones WHERE revision <= $1", {pruned_through});
        exec("UPDATE xaps_meta SET value = greatest(value, $1::bigint) "
             "WHERE name = 'pruned_through'",
             {pruned_through});
        exec("UPDATE xaps_registrations SET revision = nextval('xaps_revision') "
             "WHERE revision <= $1",
             {pruned_through});
    }

    // Runs `body` in one writing transaction: the writers' lock first, the
    // notification for the other workers' replicas last.
    template <typename Body> auto write_transaction(Body body) -> decltype(body()) {
        exec("BEGIN", {});
        try {
            exec("SELECT pg_advisory_xact_lock($1)", {std::string(writer_lock_key)});
            if constexpr (std::is_void_v<decltype(body())>) {
                body();
                exec("NOTIFY xaps_changes", {});
                exec("COMMIT", {});
            } else {
                auto result = body();
                exec("NOTIFY xaps_changes", {});
                exec("COMMIT", {});
                return result;
            }
        } catch (...) {
            rollback_quietly();
            throw;
        }
    }

    void rollback_quietly() noexcept {
        if (!connection_) {
            return;
        }
        try {
            exec("ROLLBACK", {});
        } catch (...) {
            drop_connection(last_error_);
        }
    }

    // Whether another connection committed since the last call. Drained
    // after every statement too, so that libpq's queue of notifications
    // stays short between waits. Our own writes notify us as well; those
    // the caller knows about already.
    bool other_writer_notified() {
        drain_notifications();
        return std::exchange(notified_, false);
    }

    void drain_notifications() {
        const int own_pid = PQbackendPID(connection_.get());
        while (pgsql::Notify notify{PQnotifies(connection_.get())}) {
            notified_ = notified_ || notify->be_pid != own_pid;
        }
    }

    static bool wait_for_fd(int fd, Clock::time_point until) {
        for (;;) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
            if (left.count() <= 0) {
                return false;
            }
            pollfd pfd{fd, POLLIN, 0};
            const int ready = ::poll(&pfd, fd >= 0 ? 1 : 0, static_cast<int>(left.count()));
            if (ready > 0) {
                return true;
            }
            if (ready < 0 && errno != EINTR) {
                return false;
            }
        }
    }

    [[noreturn]] void fail(const std::string &reason) {
        last_error_ = reason;
        throw Error(ErrorKind::unavailable, "shared registration store: " + reason);
    }

    void drop_connection(const std::string &reason) noexcept {
        connection_.reset();
        last_error_ = reason;
    }

    [[noreturn]] void fail_connection(const std::string &reason) {
        drop_connection(reason);
        fail(reason);
    }

    // Waits until the connection's socket is ready for `events`; drops the
    // connection and throws when the deadline passes first.
    void await_socket(short events, Clock::time_point deadline, std::string_view doing) {
        for (;;) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) {
                fail_connection("no answer within " + std::to_string(timeout_.count()) +
                                " ms while " + std::string(doing));
            }
            pollfd pfd{PQsocket(connection_.get()), events, 0};
            const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
            if (ready > 0) {
                return;
            }
            if (ready < 0 && errno != EINTR) {
                fail_connection(std::string("poll: ") + std::strerror(errno));
            }
        }
    }

    // Connects (unless within the backoff after a failed attempt), sets the
    // session up and creates the tables when missing.
    void connect() {
        const auto now = Clock::now();
        if (now < retry_at_) {
            fail(last_error_);
        }
        const auto deadline = now + timeout_;
        // Host names are resolved inside PQconnectStartParams, blocking:
        // give the database's address (or a unix socket) when DNS is slow.
        const char *keywords[] = {"fallback_application_name", "dbname", "client_encoding",
                                  nullptr};
        const char *values[] = {"xaps-worker", conninfo_.c_str(), "UTF8", nullptr};
        try {
            connection_.reset(PQconnectStartParams(keywords, values, 1));
            if (!connection_) {
                fail("out of memory");
            }
            if (PQstatus(connection_.get()) == CONNECTION_BAD) {
                fail_connection(trimmed(PQerrorMessage(connection_.get())));
            }
            PostgresPollingStatusType state = PGRES_POLLING_WRITING;
            while (state != PGRES_POLLING_OK) {
                if (state == PGRES_POLLING_FAILED) {
                    fail_connection(trimmed(PQerrorMessage(connection_.get())));
                }
                await_socket(state == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline,
                             "connecting");
                state = PQconnectPoll(connection_.get());
            }
            // "relation already exists, skipping" and the like would go to
            // stderr.
            PQsetNoticeProcessor(
                connection_.get(), [](void *, const char *) {}, nullptr);
            if (PQsetnonblocking(connection_.get(), 1) != 0) {
                fail_connection(trimmed(PQerrorMessage(connection_.get())));
            }
            // The server ends what this client stopped waiting for, and
            // never keeps a dead writer's lock.
            exec("SELECT set_config('statement_timeout', $1, false), "
                 "set_config('idle_in_transaction_session_timeout', $1, false)",
                 {std::to_string(timeout_.count())});
            exec("LISTEN xaps_changes", {});
            create_schema();
        } catch (const Error &error) {
            if (error.kind() == ErrorKind::unavailable) {
                connection_.reset();
                retry_at_ = Clock::now() + backoff_;
                backoff_ = std::min(backoff_ * 2, max_backoff);
            }
            throw;
        }
        backoff_ = first_backoff;
        retry_at_ = {};
        last_error_.clear();
        // Notifications sent while we were not listening are lost: after a
        // reconnection, changes may be waiting.
        notified_ = notified_ || ever_connected_;
        ever_connected_ = true;
    }

    void create_schema() {
        exec("BEGIN", {});
        try {
            // Two workers starting at once must not both create the tables.
            exec("SELECT pg_advisory_xact_lock($1)", {std::string(writer_lock_key)});
            exec("CREATE TABLE IF NOT EXISTS xaps_meta (name text COLLATE \"C\" PRIMARY KEY, "
                 "value bigint NOT NULL)",
                 {});
            pgsql::Result version =
                exec("SELECT value FROM xaps_meta WHERE name = 'schema_version'", {});
            if (PQntuples(version.get()) == 1 &&
                parse_int(PQgetvalue(version.get(), 0, 0)) > current_schema_version) {
                const std::string found = PQgetvalue(version.get(), 0, 0);
                rollback_quietly();
                connection_.reset();
                last_error_ = "the database holds schema version " + found +
                              ", newer than this version's " +
                              std::to_string(current_schema_version);
                throw Error(ErrorKind::config, "shared registration store: " + last_error_);
            }
            exec(schema_sql, {});
            exec("COMMIT", {});
        } catch (...) {
            rollback_quietly();
            throw;
        }
    }

    // Runs one statement (several when `params` is empty: the simple query
    // protocol) within the timeout. Connects first when needed.
    pgsql::Result exec(const char *sql, const std::vector<std::string> &params) {
        if (!connection_) {
            connect();
        }
        PGconn *connection = connection_.get();
        const auto deadline = Clock::now() + timeout_;
        int sent = 0;
        if (params.empty()) {
            sent = PQsendQuery(connection, sql);
        } else {
            std::vector<const char *> values;
            values.reserve(params.size());
            for (const std::string &param : params) {
                values.push_back(param.c_str());
            }
            sent = PQsendQueryParams(connection, sql, static_cast<int>(values.size()), nullptr,
                                     values.data(), nullptr, nullptr, 0);
        }
        if (sent == 0) {
            fail_connection(trimmed(PQerrorMessage(connection)));
        }
        for (;;) {
            const int flushed = PQflush(connection);
            if (flushed == 0) {
                break;
            }
            if (flushed < 0) {
                fail_connection(trimmed(PQerrorMessage(connection)));
            }
            await_socket(POLLOUT | POLLIN, deadline, "sending");
            if (PQconsumeInput(connection) == 0) {
                fail_connection(trimmed(PQerrorMessage(connection)));
            }
        }
        pgsql::Result last;
        pgsql::Result failed;
        for (;;) {
            while (PQisBusy(connection) != 0) {
                await_socket(POLLIN, deadline, "waiting for the database");
                if (PQconsumeInput(connection) == 0) {
                    fail_connection("connection lost: " + trimmed(PQerrorMessage(connection)));
                }
            }
            pgsql::Result result{PQgetResult(connection)};
            if (!result) {
                break;
            }
            const ExecStatusType status = PQresultStatus(result.get());
            if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
                if (!failed) {
                    failed = std::move(result);
                }
            } else {
                last = std::move(result);
            }
        }
        if (failed) {
            const std::string reason = trimmed(PQresultErrorMessage(failed.get()));
            if (PQstatus(connection) == CONNECTION_BAD) {
                fail_connection("connection lost: " + reason);
            }
            fail(reason);
        }
        if (!last) {
            fail_connection("no result");
        }
        drain_notifications();
        last_error_.clear();
        return last;
    }

    std::string conninfo_;
    std::chrono::milliseconds timeout_;
    std::int64_t ttl_;
    std::size_t max_devices_per_user_;
    std::int64_t tombstone_retention_;
    pgsql::Connection connection_;
    bool notified_ = false; // another worker committed since the last wait()
    bool ever_connected_ = false;
    std::string last_error_;
    std::chrono::milliseconds backoff_ = first_backoff;
    Clock::time_point retry_at_{};
};

} // namespace

std::unique_ptr<SharedRegistrationStore> open_pgsql_store(const SharedStoreOptions &options) {
    auto store = std::make_unique<PgsqlRegistrationStore>(options);
    // A first connection creates the tables and finds a newer schema now;
    // an unreachable database is retried by the calls.
    try {
        store->size();
    } catch (const Error &error) {
        if (error.kind() != ErrorKind::unavailable) {
            throw;
        }
    }
    return store;
}

} // namespace xaps
