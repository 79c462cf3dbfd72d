#include "https-post.h"

#include "xaps-error.h"

#include <memory>

#include <curl/curl.h>

namespace xaps {
namespace {

struct CurlFree {
    void operator()(CURL *curl) const noexcept { curl_easy_cleanup(curl); }
};
struct SlistFree {
    void operator()(curl_slist *list) const noexcept { curl_slist_free_all(list); }
};

// libcurl wants one global init before the first handle, from one thread;
// doveadm, which calls us, has no other thread.
void global_init_once() {
    static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (init != CURLE_OK) {
        throw Error(ErrorKind::internal,
                    std::string("curl_global_init: ") + curl_easy_strerror(init));
    }
}

struct Sink {
    std::string body;
    std::size_t limit = 0;
    bool overflowed = false;
};

// A C callback: must not throw. Returning less than given aborts the transfer.
extern "C" std::size_t https_post_write_body(char *data, std::size_t size, std::size_t count,
                                             void *user) noexcept {
    auto *sink = static_cast<Sink *>(user);
    std::size_t bytes = size * count;
    if (bytes > sink->limit - sink->body.size()) {
        sink->overflowed = true;
        return 0;
    }
    try {
        sink->body.append(data, bytes);
    } catch (...) {
        return 0;
    }
    return bytes;
}

template <typename T> void set_option(CURL *curl, CURLoption option, T value) {
    CURLcode code = curl_easy_setopt(curl, option, value);
    if (code != CURLE_OK) {
        throw Error(ErrorKind::internal,
                    std::string("curl_easy_setopt: ") + curl_easy_strerror(code));
    }
}

} // namespace

HttpsPostResponse https_post(const HttpsPostRequest &request) {
    global_init_once();
    std::unique_ptr<CURL, CurlFree> curl(curl_easy_init());
    if (!curl) {
        throw Error(ErrorKind::internal, "curl_easy_init failed");
    }
    std::unique_ptr<curl_slist, SlistFree> headers;
    for (const std::string &header : request.headers) {
        curl_slist *appended = curl_slist_append(headers.get(), header.c_str());
        if (appended == nullptr) {
            throw Error(ErrorKind::internal, "curl_slist_append failed");
        }
        (void)headers.release();
        headers.reset(appended);
    }
    // curl would otherwise send "Expect: 100-continue" for a large body and
    // wait for an interim answer Apple's service never sent.
    if (curl_slist *appended = curl_slist_append(headers.get(), "Expect:")) {
        (void)headers.release();
        headers.reset(appended);
    }

    Sink sink;
    sink.limit = request.max_response_bytes;
    char error_buffer[CURL_ERROR_SIZE] = {};
    CURL *handle = curl.get();
    set_option(handle, CURLOPT_URL, request.url.c_str());
    set_option(handle, CURLOPT_PROTOCOLS_STR, "https");
    set_option(handle, CURLOPT_FOLLOWLOCATION, 0L);
    set_option(handle, CURLOPT_NOSIGNAL, 1L); // no SIGALRM for timeouts inside doveadm
    set_option(handle, CURLOPT_NOPROGRESS, 1L);
    set_option(handle, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    set_option(handle, CURLOPT_SSL_VERIFYPEER, 1L);
    set_option(handle, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!request.ca_file.empty()) {
        set_option(handle, CURLOPT_CAINFO, request.ca_file.c_str());
    }
    set_option(handle, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
    set_option(handle, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(request.timeout.count()));
    set_option(handle, CURLOPT_POST, 1L);
    set_option(handle, CURLOPT_POSTFIELDS, request.body.data());
    set_option(handle, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    set_option(handle, CURLOPT_HTTPHEADER, headers.get());
    // Refuses an announced Content-Length over the limit before reading it.
    set_option(handle, CURLOPT_MAXFILESIZE_LARGE,
               static_cast<curl_off_t>(request.max_response_bytes));
    set_option(handle, CURLOPT_WRITEFUNCTION, https_post_write_body);
    set_option(handle, CURLOPT_WRITEDATA, &sink);
    set_option(handle, CURLOPT_ERRORBUFFER, error_buffer);

    CURLcode code = curl_easy_perform(handle);
    if (sink.overflowed || code == CURLE_FILESIZE_EXCEEDED) {
        throw Error(ErrorKind::invalid_input, request.url + ": answer larger than " +
                                                  std::to_string(request.max_response_bytes) +
                                                  " bytes, not read");
    }
    if (code != CURLE_OK) {
        std::string detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
        throw Error(ErrorKind::unavailable, request.url + ": " + detail);
    }
    HttpsPostResponse response;
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &response.status);
    response.body = std::move(sink.body);
    return response;
}

} // namespace xaps
