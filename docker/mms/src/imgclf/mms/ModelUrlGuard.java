package imgclf.mms;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.ReferenceCountUtil;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * Multi-model endpoints: POST /models registers a model from a `url`. Stock MMS downloads http(s) URLs and loads
 * whatever handler code the archive brings, so anyone who can reach the port could run code in the container.
 * SageMaker only ever passes a local directory (/opt/ml/models/HASH/model); this guard lets exactly that through:
 * the url (query parameter or JSON body field) must be a path with no scheme whose canonical form (symlinks and
 * `..` resolved) lies under the models root. Anything else is answered 400 before MMS sees it.
 */
@ChannelHandler.Sharable
final class ModelUrlGuard extends ChannelInboundHandlerAdapter {

    private final String root;

    ModelUrlGuard(String modelsRoot) throws IOException {
        this.root = new File(modelsRoot).getCanonicalPath();
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (msg instanceof FullHttpRequest) {
            FullHttpRequest req = (FullHttpRequest) msg;
            QueryStringDecoder decoder = new QueryStringDecoder(req.uri());
            if (HttpMethod.POST.equals(req.method()) && "/models".equals(decoder.path().replaceAll("/+$", ""))) {
                String problem = check(urlOf(req, decoder));
                if (problem != null) {
                    refuse(ctx, req, problem);
                    return;
                }
            }
        }
        ctx.fireChannelRead(msg);
    }

    private static String urlOf(FullHttpRequest req, QueryStringDecoder decoder) {
        List<String> values = decoder.parameters().get("url");
        if (values != null && !values.isEmpty()) {
            return values.get(0);
        }
        String body = req.content().toString(StandardCharsets.UTF_8).trim();
        if (body.startsWith("{")) {
            try {
                JsonObject json = new JsonParser().parse(body).getAsJsonObject();
                JsonElement url = json.get("url");
                return url == null || url.isJsonNull() ? null : url.getAsString();
            } catch (RuntimeException e) {
                return null;
            }
        }
        return null;
    }

    /** Null when the url is a local directory under the models root; else the reason, for the 400 body. */
    String check(String url) {
        if (url == null || url.isEmpty()) {
            return "POST /models needs a url: a model directory under " + root;
        }
        if (url.contains("://") || url.startsWith("s3:") || url.startsWith("http:") || url.startsWith("https:")) {
            return "model url must be a local directory under " + root + "; URLs are never fetched";
        }
        try {
            String path = new File(url).getCanonicalPath();
            if (!path.startsWith(root + File.separator) || !new File(path).isDirectory()) {
                return "model url must be an existing directory under " + root + " (symlinks and .. resolved)";
            }
        } catch (IOException e) {
            return "model url is not a readable path";
        }
        return null;
    }

    private static void refuse(ChannelHandlerContext ctx, FullHttpRequest req, String message) {
        String body =
                "{\"code\": 400, \"type\": \"BadRequestException\", \"message\": "
                        + new com.google.gson.JsonPrimitive(message)
                        + "}";
        FullHttpResponse resp =
                new DefaultFullHttpResponse(
                        HttpVersion.HTTP_1_1,
                        HttpResponseStatus.BAD_REQUEST,
                        Unpooled.copiedBuffer(body, StandardCharsets.UTF_8));
        resp.headers().set(HttpHeaderNames.CONTENT_TYPE, "application/json");
        HttpUtil.setContentLength(resp, resp.content().readableBytes());
        boolean keepAlive = HttpUtil.isKeepAlive(req);
        ReferenceCountUtil.release(req);
        if (keepAlive) {
            ctx.writeAndFlush(resp);
        } else {
            ctx.writeAndFlush(resp).addListener(ChannelFutureListener.CLOSE);
        }
    }
}
