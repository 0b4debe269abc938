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
  if (out.verdict == Verdict::kPass || out.verdict == Verdict::kQuarantine) {
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

bool GoesToQuarantine(Verdict verdict) {
  return verdict == Verdict::kReject || verdict == Verdict::kQuarantine;
}

// Runs the message hooks, then for anything the quarantine does not come first for, the
// report hooks; `done` with the outcome, on the session's thread.
OutcomeJob MessageHooksJob(std::shared_ptr<MessageJob> job) {
  return [job = std::move(job)](std::function<void(MessageOutcome)> done) {
    job->chain->info().user = job->user;
    job->message.emplace(job->original, job->context.partial);
    job->chain->RunMessageAsync(job->context, *job->message, [job, done](MessageReport report) {
      job->report = std::move(report);
      if (job->headers_only && job->report.result.verdict == Verdict::kQuarantine) {
        // Keeping the original while delivering an edit of it would hold the whole
        // message in a chain built not to: a plugin that wants this asks for the whole
        // message. Withheld, so nothing is lost.
        job->report.result = FilterResult::TempFail(
            "quarantine needs the whole message (the chain holds headers only): " +
            job->report.result.reason);
      }
      MessageOutcome out = OutcomeOf(*job);
      if (GoesToQuarantine(out.verdict)) return done(std::move(out));
      job->report.size_out = out.verdict == Verdict::kPass ? job->message->size() : 0;
      job->chain->ReportMessageAsync(job->context, *job->message, job->report,
                                     [job, done, out = std::move(out)] { done(out); });
    });
  };
}

// A reject or a quarantine: stores the original, then makes what the client gets instead
// (a reject's notice; a quarantine's edited message, naming the stored original). Without
// a quarantine, or if storing fails, the message is withheld as a temporary failure: the
// upstream still has it, so nothing is lost.
MessageOutcome QuarantineOriginal(MessageJob& job, MessageOutcome out,
                                  quarantine::MaildirQuarantine* store, std::uint64_t session_id,
                                  const std::string& client) {
  const bool reject = out.verdict == Verdict::kReject;
  if (store == nullptr) {
    out.verdict = Verdict::kTempFail;
    out.reason = std::string(reject ? "rejected" : "asked to quarantine the original") +
                 ", but no [quarantine] path is configured: " + out.reason;
  } else {
    try {
      quarantine::Entry entry{job.original.view(), session_id, job.user, client,
                              out.decided_by,      out.reason};
      out.quarantine_id = store->Store(entry);
      job.report.quarantine_id = out.quarantine_id;
      if (reject) {
        mail::Message original(job.original);
        std::string notice =
            quarantine::RejectNotice(original, out.quarantine_id, out.decided_by, out.reason);
        pop3::StuffLines(CutForTop(notice, job.top_lines), out.head);
        job.report.size_out = notice.size();
      } else {
        // The delivered message says where its original is, for the admin who releases it.
        // Set, not Add: a sender's own field of that name must not point elsewhere.
        job.message->headers().Set(quarantine::kQuarantineIdHeader, out.quarantine_id);
        MessageOutcome edited = OutcomeOf(job);
        out.head = std::move(edited.head);
        out.body = edited.body;
        job.report.size_out = job.message->size();
      }
    } catch (const std::exception& e) {
      out.verdict = Verdict::kTempFail;
      out.reason = "quarantine failed (" + std::string(e.what()) + "): " + out.reason;
      out.quarantine_id.clear();
      job.report.quarantine_id.clear();
    }
  }
  if (out.verdict == Verdict::kTempFail) {
    job.report.size_out = 0;
    job.report.result = FilterResult::TempFail(out.reason);
  }
  return out;
}

}  // namespace popgate::filter
