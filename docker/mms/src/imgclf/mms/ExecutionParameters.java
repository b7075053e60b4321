package imgclf.mms;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * GET /execution-parameters for SageMaker batch transform.
 *
 * <p>MaxConcurrentTransforms = worker count (one request per worker in flight), BatchStrategy = MULTI_RECORD
 * (/invocations takes JSON lines of base64 images, answered with one line each), MaxPayloadInMB = the front-end's
 * max_request_size.
 */
@Endpoint(
        urlPattern = "execution-parameters",
        endpointType = EndpointTypes.INFERENCE,
        description = "SageMaker batch transform execution parameters")
public class ExecutionParameters extends ModelServerEndpoint {

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        Properties config = ctx.getConfig();
        int workers =
                Integer.parseInt(
                        System.getProperty(
                                "imgclf.workers", config.getProperty("default_workers_per_model", "1")));
        long maxRequestBytes = Long.parseLong(config.getProperty("max_request_size", "6291456"));
        long maxPayloadMb = Math.max(1, maxRequestBytes / (1024 * 1024));
        String body =
                String.format(
                        "{\"MaxConcurrentTransforms\": %d, \"BatchStrategy\": \"MULTI_RECORD\", "
                                + "\"MaxPayloadInMB\": %d}",
                        Math.max(1, workers), maxPayloadMb);
        rsp.setStatus(200);
        rsp.setHeader("Content-Type", "application/json");
        rsp.getOutputStream().write(body.getBytes(StandardCharsets.UTF_8));
    }
}
