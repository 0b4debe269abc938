#include "filter/message_filter.h"

#include <exception>
#include <utility>

#include "pop3/multiline.h"

namespace popgate::filter {

// The content to send for TOP widened to the whole message: what the client asked for.
std::string_view CutForTop(std::string_view content, const std::optional<std::uint64_t>& lines) {
  return lines ? content.substr(0, pop3::TopLength(content, *lines)) : content;
}

// What the session sends for the chain's verdict on the job's message.
MessageOutcome OutcomeOf(MessageJob& job) {
  MessageOutcome out;
  out.verdict = job.report.result.verdict;
  out.reason = job.report.result.reason;
  out.decided_by = job.report.decided_by;
  if (out.verdict == Verdict::kPass) {
    if (!job.message->modified()) {
      out.body = CutForTop(job.original.view(), job.top_lines);
    } else {
      auto parts = job.message->parts();
      pop3::StuffLines(parts.headers, out.head);
      pop3::StuffLines(parts.separator, out.head);
      // A change to the header block moves where TOP's lines start: cut the body itself.
      std::string_view body = parts.body;
      if (job.top_lines) body = body.substr(0, pop3::FirstLinesLength(body, *job.top_lines));
      if (job.original.contains(body)) {
        out.body = body;  // as received: decoded, so canonical
      } else {
        pop3::StuffLines(body, out.head);  // a plugin's: any line ends
      }
    }
  }
  return out;
}

// Runs the message hooks, then for anything but a reject (the quarantine comes first) the
// report hooks; `done` with the outcome, on the session's thread.
OutcomeJob MessageHooksJob(std::shared_ptr<MessageJob> job) {
  return [job = std::move(job)](std::function<void(MessageOutcome)> done) {
    job->chain->info().user = job->user;
    job->message.emplace(job->original, job->context.partial);
    job->chain->RunMessageAsync(job->context, *job->message, [job, done](MessageReport report) {
      job->report = std::move(report);
      MessageOutcome out = OutcomeOf(*job);
      if (out.verdict == Verdict::kReject) return done(std::move(out));
      job->report.size_out = out.verdict == Verdict::kPass ? job->message->size() : 0;
      job->chain->ReportMessageAsync(job->context, *job->message, job->report,
                                     [job, done, out = std::move(out)] { done(out); });
    });
  };
}

// A reject: stores the original, then makes the notice the client gets instead. Without
// a quarantine, or if storing fails, the message is withheld as a temporary failure: the
// upstream still has it, so nothing is lost.
MessageOutcome QuarantineRejected(MessageJob& job, MessageOutcome out,
                                  quarantine::MaildirQuarantine* store, std::uint64_t session_id,
                                  const std::string& client) {
  if (store == nullptr) {
    out.verdict = Verdict::kTempFail;
    out.reason = "rejected, but no [quarantine] path is configured: " + out.reason;
  } else {
    try {
      quarantine::Entry entry{job.original.view(), session_id, job.user, client,
                              out.decided_by,      out.reason};
      out.quarantine_id = store->Store(entry);
      mail::Message original(job.original);
      std::string notice =
          quarantine::RejectNotice(original, out.quarantine_id, out.decided_by, out.reason);
      pop3::StuffLines(CutForTop(notice, job.top_lines), out.head);
      job.report.quarantine_id = out.quarantine_id;
      job.report.size_out = notice.size();
    } catch (const std::exception& e) {
      out.verdict = Verdict::kTempFail;
      out.reason = "quarantine failed (" + std::string(e.what()) + "): " + out.reason;
      out.quarantine_id.clear();
    }
  }
  if (out.verdict == Verdict::kTempFail) job.report.size_out = 0;
  return out;
}

}  // namespace popgate::filter
